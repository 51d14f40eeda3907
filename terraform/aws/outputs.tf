output "nodes" {
  description = "Every node by name: rank, address (its Elastic IP if it has one, else its private address), private address, SSH port and user, zone, instance id, and host_key. host_key is empty: EC2 shows it in the instance's console output after boot, and dlvm reads it there."
  value = {
    for name, node in aws_instance.node : name => {
      rank        = var.nodes[name].rank
      ip          = var.public_ip ? aws_eip.node[name].public_ip : node.private_ip
      internal_ip = node.private_ip
      port        = 22
      user        = var.ssh_user
      zone        = node.availability_zone
      instance    = node.id
      host_key    = ""
    }
  }
}

output "zone" {
  description = "The Availability Zone the nodes are in."
  value       = var.zone
}

output "vpc_id" {
  description = "The VPC the nodes are in (made for the cluster, or the one given)."
  value       = local.vpc_id
}

output "role" {
  description = "The IAM role the nodes act as (instance profile): S3 access to the spec's buckets, and terminating the cluster's own instances when autostop takes it down."
  value       = aws_iam_role.nodes.name
}
