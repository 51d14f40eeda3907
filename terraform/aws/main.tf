provider "aws" {
  region  = var.region
  profile = var.profile == "" ? null : var.profile

  # Every resource that takes tags carries the cluster's: how `status` finds the instances,
  # and what the nodes' self-delete permission is limited to.
  default_tags {
    tags = local.tags
  }
}

locals {
  tags = {
    "dlvm-cluster" = var.cluster_name
    "created-by"   = "dlvm"
  }
  create_vpc = var.vpc_id == ""
  vpc_id     = local.create_vpc ? aws_vpc.cluster[0].id : var.vpc_id
  subnet_id  = local.create_vpc ? aws_subnet.cluster[0].id : var.subnet_id
  ami        = var.ami != "" ? var.ami : data.aws_ssm_parameter.ami[0].insecure_value
  # One EFA-only interface per node and slot of efa_interfaces, keyed "node-0/3".
  efa = {
    for pair in setproduct(keys(var.nodes), range(length(var.efa_interfaces))) :
    "${pair[0]}/${pair[1]}" => { node = pair[0], slot = pair[1] }
  }
  # IAM names are global to the account: the region keeps two clusters of one name apart.
  iam_name    = "dlvm-${var.cluster_name}-${var.region}"
  bucket_arns = [for name in keys(var.buckets) : "arn:aws:s3:::${name}"]
  writable_arns = [
    for name, bucket in var.buckets : "arn:aws:s3:::${name}/*" if bucket.writable
  ]
}

data "aws_ssm_parameter" "ami" {
  count = var.ami == "" ? 1 : 0

  name = var.ami_parameter
}

data "aws_partition" "current" {}

# -- network: a VPC of the cluster's own unless one is given ----------------------------------

resource "aws_vpc" "cluster" {
  count = local.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = "dlvm-${var.cluster_name}" }
}

resource "aws_subnet" "cluster" {
  count = local.create_vpc ? 1 : 0

  vpc_id            = aws_vpc.cluster[0].id
  cidr_block        = var.vpc_cidr
  availability_zone = var.zone

  tags = { Name = "dlvm-${var.cluster_name}" }
}

resource "aws_internet_gateway" "cluster" {
  count = local.create_vpc ? 1 : 0

  vpc_id = aws_vpc.cluster[0].id

  tags = { Name = "dlvm-${var.cluster_name}" }
}

resource "aws_route_table" "cluster" {
  count = local.create_vpc ? 1 : 0

  vpc_id = aws_vpc.cluster[0].id

  tags = { Name = "dlvm-${var.cluster_name}" }
}

resource "aws_route" "internet" {
  count = local.create_vpc ? 1 : 0

  route_table_id         = aws_route_table.cluster[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.cluster[0].id
}

resource "aws_route_table_association" "cluster" {
  count = local.create_vpc ? 1 : 0

  subnet_id      = aws_subnet.cluster[0].id
  route_table_id = aws_route_table.cluster[0].id
}

# -- security group: SSH from the allowed ranges, everything between the nodes ---------------

resource "aws_security_group" "nodes" {
  name        = "dlvm-${var.cluster_name}"
  description = "Nodes of dlvm cluster ${var.cluster_name}"
  vpc_id      = local.vpc_id

  tags = { Name = "dlvm-${var.cluster_name}" }
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.allowed_ssh_cidrs)

  security_group_id = aws_security_group.nodes.id
  description       = "SSH to the nodes"
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

# EFA needs both directions allowed to the group itself (rendezvous, NCCL and MPI pick their
# own ports too).
resource "aws_vpc_security_group_ingress_rule" "between_nodes" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic from the cluster's nodes (EFA included)"
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "between_nodes" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic to the cluster's nodes (EFA included)"
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "out" {
  security_group_id = aws_security_group.nodes.id
  description       = "Packages, images, S3 and the AWS APIs"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

resource "aws_key_pair" "cluster" {
  key_name   = "dlvm-${var.cluster_name}"
  public_key = var.ssh_public_key
}

# Without a partition count or spread level the group takes instances as they come, so the
# node set can grow and shrink.
resource "aws_placement_group" "cluster" {
  count = var.placement_group ? 1 : 0

  name     = "dlvm-${var.cluster_name}"
  strategy = "cluster"
}

# -- the nodes' identity: their buckets, and nothing else but autostop's self-delete ----------

resource "aws_iam_role" "nodes" {
  name        = local.iam_name
  description = "Nodes of dlvm cluster ${var.cluster_name}"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_instance_profile" "nodes" {
  name = local.iam_name
  role = aws_iam_role.nodes.name
}

# Mountpoint for Amazon S3 lists the bucket and reads its objects; a writable mount also
# writes, overwrites and deletes them (and abandons multipart uploads it cannot finish).
resource "aws_iam_role_policy" "buckets" {
  count = length(var.buckets) > 0 ? 1 : 0

  name = "buckets"
  role = aws_iam_role.nodes.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Effect   = "Allow"
          Action   = ["s3:ListBucket"]
          Resource = local.bucket_arns
        },
        {
          Effect   = "Allow"
          Action   = ["s3:GetObject"]
          Resource = [for arn in local.bucket_arns : "${arn}/*"]
        },
      ],
      length(local.writable_arns) == 0 ? [] : [{
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        Resource = local.writable_arns
      }],
    )
  })
}

# Autostop's `down`: a node terminates instances of its own cluster (by their tag), no others.
resource "aws_iam_role_policy" "self_delete" {
  count = var.self_delete ? 1 : 0

  name = "self-delete"
  role = aws_iam_role.nodes.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["ec2:TerminateInstances"]
      Resource = "arn:${data.aws_partition.current.partition}:ec2:${var.region}:*:instance/*"
      Condition = {
        StringEquals = { "aws:ResourceTag/dlvm-cluster" = var.cluster_name }
      }
    }]
  })
}

# -- network interfaces: an ENA primary, the EFA-only ones, an Elastic IP ----------------------

# Made apart from the instance so that a replaced node keeps its addresses.
resource "aws_network_interface" "primary" {
  for_each = var.nodes

  subnet_id       = local.subnet_id
  security_groups = [aws_security_group.nodes.id]
  description     = "Primary interface of ${var.cluster_name}-${each.key}"

  tags = { Name = "${var.cluster_name}-${each.key}" }
}

resource "aws_network_interface" "efa" {
  for_each = local.efa

  subnet_id       = local.subnet_id
  security_groups = [aws_security_group.nodes.id]
  interface_type  = "efa-only"
  description     = "EFA ${each.value.slot} of ${var.cluster_name}-${each.value.node}"

  tags = { Name = "${var.cluster_name}-${each.value.node}-efa-${each.value.slot}" }
}

# EC2 gives no public address to an instance launched with several interfaces: the primary
# interface gets an Elastic IP instead.
resource "aws_eip" "node" {
  for_each = var.public_ip ? var.nodes : {}

  domain            = "vpc"
  network_interface = aws_network_interface.primary[each.key].id

  tags = { Name = "${var.cluster_name}-${each.key}" }

  depends_on = [aws_internet_gateway.cluster]
}

# -- the nodes ----------------------------------------------------------------------------------

resource "aws_instance" "node" {
  for_each = var.nodes

  ami                  = local.ami
  instance_type        = var.instance_type
  key_name             = aws_key_pair.cluster.key_name
  iam_instance_profile = aws_iam_instance_profile.nodes.name
  placement_group      = var.placement_group ? aws_placement_group.cluster[0].name : null
  # A guest `shutdown` (autostop's stop) stops the instance, its volume kept; a one-time Spot
  # instance can only be terminated.
  instance_initiated_shutdown_behavior = var.market == "spot" ? "terminate" : "stop"

  network_interface {
    network_interface_id = aws_network_interface.primary[each.key].id
    device_index         = 0
    network_card_index   = 0
  }

  dynamic "network_interface" {
    for_each = var.efa_interfaces

    content {
      network_interface_id = aws_network_interface.efa["${each.key}/${network_interface.key}"].id
      device_index         = network_interface.value.device_index
      network_card_index   = network_interface.value.network_card
    }
  }

  root_block_device {
    volume_size           = var.disk_gb
    volume_type           = var.disk_type
    encrypted             = true
    delete_on_termination = true
  }

  # IMDSv2 only: the nodes' credentials are not readable by a plain GET forwarded from a job.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  dynamic "instance_market_options" {
    for_each = var.market == "on-demand" ? [] : [var.market]

    content {
      market_type = instance_market_options.value

      dynamic "spot_options" {
        for_each = instance_market_options.value == "spot" ? [1] : []

        content {
          spot_instance_type             = "one-time"
          instance_interruption_behavior = "terminate"
        }
      }
    }
  }

  # Spot instances use no reservation; the others use open ones, none, or the one named (a
  # capacity block is always named).
  dynamic "capacity_reservation_specification" {
    for_each = var.market == "spot" ? [] : [1]

    content {
      capacity_reservation_preference = var.reservation_id == "" ? var.reservation_preference : null

      dynamic "capacity_reservation_target" {
        for_each = var.reservation_id == "" ? [] : [var.reservation_id]

        content {
          capacity_reservation_id = capacity_reservation_target.value
        }
      }
    }
  }

  tags = {
    Name        = "${var.cluster_name}-${each.key}"
    "dlvm-node" = each.key
  }

  volume_tags = merge(local.tags, { Name = "${var.cluster_name}-${each.key}" })

  timeouts {
    # Eight-GPU instances can take longer than the provider's default 10 minutes to start.
    create = "30m"
  }

  depends_on = [
    aws_route_table_association.cluster,
    aws_route.internet,
    aws_vpc_security_group_ingress_rule.between_nodes,
    aws_vpc_security_group_egress_rule.between_nodes,
  ]
}
