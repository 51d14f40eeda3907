provider "google" {
  project = var.project
  region  = var.region
}

locals {
  # Labels go on every resource that takes them (instances and disks); the others (network,
  # subnetwork, firewall rules, placement policy) are named dlvm-<cluster>-... instead.
  labels = {
    cluster      = var.cluster_name
    "created-by" = "dlvm"
  }
  # The network tag the firewall rules select the cluster's nodes by.
  tag            = "dlvm-${var.cluster_name}"
  create_network = var.network == ""
  # Firewall rules live with the network: in the host project of a Shared VPC.
  network_project = var.network_project == "" ? var.project : var.network_project
  # Private nodes on a network dlvm makes reach the internet (package indexes, the GPU
  # plugins' images) through Cloud NAT; Private Google Access on the subnetwork serves Google
  # APIs and Cloud Storage.
  nat = local.create_network && !var.public_ip
  # The account the nodes act as: the cluster's own (made below), one given, or, with neither,
  # the project's Compute Engine default service account.
  service_account_email = (
    var.create_service_account ? google_service_account.node[0].email : var.service_account_email
  )
  network = local.create_network ? google_compute_network.cluster[0].self_link : var.network
  # The created subnetwork, else the one given, else none (an auto-mode network picks it).
  subnetwork = (
    local.create_network ? google_compute_subnetwork.cluster[0].self_link :
    var.subnetwork == "" ? null : var.subnetwork
  )
  standard = var.provisioning_model == "STANDARD"
  # Placed close together: by the cluster's own compact policy, or by the reservation's.
  placed           = var.compact_placement || var.placement_policy != ""
  placement_policy = var.placement_policy == "" ? google_compute_resource_policy.compact[*].self_link : [var.placement_policy]
  # GPUs cannot live-migrate; Spot, flex-start and reservation-bound VMs and compact placement
  # require TERMINATE as well.
  terminate_on_maintenance = var.install_nvidia_driver || !local.standard || local.placed
  metadata = merge(
    {
      # Host keys are published to guest attributes only if enabled before first boot.
      "enable-guest-attributes" = "TRUE"
      # With OS Login the user's Google identity and IAM decide who logs in, and the key is on
      # the user's OS Login profile; without it the key comes from ssh-keys metadata.
      "enable-oslogin" = var.os_login ? "TRUE" : "FALSE"
    },
    var.os_login || var.ssh_public_key == "" ? {} : {
      "ssh-keys" = "${var.ssh_user}:${trimspace(var.ssh_public_key)}"
    },
    var.install_nvidia_driver ? { "install-nvidia-driver" = "True" } : {},
    var.startup_script == "" ? {} : { "startup-script" = var.startup_script },
  )
  # Every NIC of a node, in the order the VM gets them: nic0 on the cluster network (with an
  # external address when public_ip), the gVNICs on GPU VPCs, then the MRDMA NICs.
  nics = concat(
    [{
      network    = local.network
      subnetwork = local.subnetwork
      nic_type   = var.nic_type == "" ? null : var.nic_type
      public     = var.public_ip
    }],
    [for subnet in google_compute_subnetwork.gpu : {
      network    = null
      subnetwork = subnet.self_link
      nic_type   = "GVNIC"
      public     = false
    }],
    [for subnet in google_compute_subnetwork.rdma : {
      network    = null
      subnetwork = subnet.self_link
      nic_type   = "MRDMA"
      public     = false
    }],
  )
  # A3 Ultra and A4 RDMA NICs attach only to a VPC made with the RoCE profile of their zone.
  rdma_network_profile = "projects/${var.project}/global/networkProfiles/${var.zone}-vpc-roce"
  # Each GPU and RDMA subnetwork is a 32nd of gpu_cidr_range (a /16 of the default /11): GPU
  # VPCs from the bottom, RDMA subnetworks from the middle, so the two never meet.
  gpu_cidr_bits    = 5
  rdma_cidr_offset = 16
}

resource "google_compute_network" "cluster" {
  count = local.create_network ? 1 : 0

  name                    = "dlvm-${var.cluster_name}"
  description             = "Network of dlvm cluster ${var.cluster_name}."
  auto_create_subnetworks = false
  # Jumbo frames: collective traffic between nodes moves large messages.
  mtu = 8896
}

resource "google_compute_subnetwork" "cluster" {
  count = local.create_network ? 1 : 0

  name                     = "dlvm-${var.cluster_name}"
  description              = "Subnetwork of dlvm cluster ${var.cluster_name}."
  region                   = var.region
  network                  = google_compute_network.cluster[0].id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

# Egress for private nodes: a Cloud Router with Cloud NAT on the cluster's network.
resource "google_compute_router" "nat" {
  count = local.nat ? 1 : 0

  name        = "dlvm-${var.cluster_name}"
  description = "Router of the Cloud NAT of dlvm cluster ${var.cluster_name}."
  region      = var.region
  network     = google_compute_network.cluster[0].id
}

resource "google_compute_router_nat" "nat" {
  count = local.nat ? 1 : 0

  name                               = "dlvm-${var.cluster_name}"
  router                             = google_compute_router.nat[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# SSH in, the one way in from outside the cluster: from the allowed ranges to nodes with
# external addresses, or, for private nodes, only from Identity-Aware Proxy's TCP forwarding
# range, where IAM (roles/iap.tunnelResourceAccessor) decides who gets through.
resource "google_compute_firewall" "ssh" {
  count = var.manage_firewall ? 1 : 0

  name          = "dlvm-${var.cluster_name}-ssh"
  description   = "SSH to the nodes of dlvm cluster ${var.cluster_name}${var.public_ip ? "" : ", through IAP TCP forwarding"}."
  project       = local.network_project
  network       = local.network
  direction     = "INGRESS"
  source_ranges = var.public_ip ? var.allowed_ssh_cidrs : [var.iap_source_range]
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

moved {
  from = google_compute_firewall.ssh
  to   = google_compute_firewall.ssh[0]
}

# Everything between the cluster's own nodes (rendezvous, NCCL/gloo, MPI pick their own ports).
resource "google_compute_firewall" "internal" {
  count = var.manage_firewall ? 1 : 0

  name        = "dlvm-${var.cluster_name}-internal"
  description = "All traffic between the nodes of dlvm cluster ${var.cluster_name}."
  project     = local.network_project
  network     = local.network
  direction   = "INGRESS"
  source_tags = [local.tag]
  target_tags = [local.tag]

  allow {
    protocol = "all"
  }
}

moved {
  from = google_compute_firewall.internal
  to   = google_compute_firewall.internal[0]
}

# The GPU NICs of A3 High and A3 Mega (and the second gVNIC of A3 Ultra and A4): each on a
# VPC of its own, as Compute Engine requires of a VM's NICs.
resource "google_compute_network" "gpu" {
  count = var.gpu_vpc_nics

  name                    = "dlvm-${var.cluster_name}-gpu-${count.index}"
  description             = "GPU network ${count.index} of dlvm cluster ${var.cluster_name}."
  auto_create_subnetworks = false
  mtu                     = var.gpu_vpc_mtu
}

resource "google_compute_subnetwork" "gpu" {
  count = var.gpu_vpc_nics

  name          = "dlvm-${var.cluster_name}-gpu-${count.index}"
  description   = "GPU subnetwork ${count.index} of dlvm cluster ${var.cluster_name}."
  region        = var.region
  network       = google_compute_network.gpu[count.index].id
  ip_cidr_range = cidrsubnet(var.gpu_cidr_range, local.gpu_cidr_bits, count.index)
}

# GPU traffic between the nodes; nothing from outside the subnetwork.
resource "google_compute_firewall" "gpu_internal" {
  count = var.gpu_vpc_nics

  name          = "dlvm-${var.cluster_name}-gpu-${count.index}-internal"
  description   = "All traffic between the nodes on GPU network ${count.index} of dlvm cluster ${var.cluster_name}."
  network       = google_compute_network.gpu[count.index].self_link
  direction     = "INGRESS"
  source_ranges = [google_compute_subnetwork.gpu[count.index].ip_cidr_range]
  target_tags   = [local.tag]

  allow {
    protocol = "all"
  }
}

# RDMA over Converged Ethernet: one VPC for all MRDMA NICs, a subnetwork per NIC. A RoCE VPC
# takes no firewall rules: only the RDMA NICs of VMs can be in it.
resource "google_compute_network" "rdma" {
  count = var.rdma_nics > 0 ? 1 : 0

  name                    = "dlvm-${var.cluster_name}-rdma"
  description             = "RDMA network of dlvm cluster ${var.cluster_name}."
  auto_create_subnetworks = false
  network_profile         = local.rdma_network_profile
  mtu                     = 8896
}

resource "google_compute_subnetwork" "rdma" {
  count = var.rdma_nics

  name          = "dlvm-${var.cluster_name}-rdma-${count.index}"
  description   = "RDMA subnetwork ${count.index} of dlvm cluster ${var.cluster_name}."
  region        = var.region
  network       = google_compute_network.rdma[0].id
  ip_cidr_range = cidrsubnet(var.gpu_cidr_range, local.gpu_cidr_bits, local.rdma_cidr_offset + count.index)
}

# Without vm_count the policy takes VMs as they come, so the node set can grow and shrink.
resource "google_compute_resource_policy" "compact" {
  count = var.compact_placement ? 1 : 0

  name        = "dlvm-${var.cluster_name}-compact"
  description = "Compact placement of the nodes of dlvm cluster ${var.cluster_name}."
  region      = var.region

  group_placement_policy {
    collocation = "COLLOCATED"
  }
}

resource "google_compute_instance" "node" {
  # A flex-start gang's VMs are the managed instance group's (below), created all at once.
  for_each = var.flex_gang ? {} : var.nodes

  name                      = "${var.cluster_name}-${each.key}"
  description               = "Node ${each.key} of dlvm cluster ${var.cluster_name}."
  zone                      = var.zone
  machine_type              = var.machine_type
  tags                      = [local.tag]
  labels                    = merge(local.labels, { node = each.key })
  metadata                  = local.metadata
  resource_policies         = local.placement_policy
  allow_stopping_for_update = true

  boot_disk {
    auto_delete = true

    initialize_params {
      image  = var.image
      size   = var.disk_gb
      type   = var.disk_type
      labels = merge(local.labels, { node = each.key })
    }
  }

  # Only N1 types take attached GPUs; a2/a3/g2 carry theirs and get no block at all.
  dynamic "guest_accelerator" {
    for_each = var.guest_accelerators

    content {
      type  = guest_accelerator.value.type
      count = guest_accelerator.value.count
    }
  }

  # NICs are numbered in the order of local.nics.
  dynamic "network_interface" {
    for_each = local.nics

    content {
      network    = network_interface.value.network
      subnetwork = network_interface.value.subnetwork
      nic_type   = network_interface.value.nic_type

      # An empty access_config gives the node an ephemeral external address; none, no address.
      dynamic "access_config" {
        for_each = network_interface.value.public ? [1] : []

        content {}
      }
    }
  }

  # The nodes' identity for Google APIs. The cloud-platform scope lets IAM alone decide what
  # the account reaches; without an email the provider attaches the project's Compute Engine
  # default service account.
  dynamic "service_account" {
    for_each = var.attach_service_account ? [1] : []

    content {
      email  = local.service_account_email == "" ? null : local.service_account_email
      scopes = ["cloud-platform"]
    }
  }

  # Only standard VMs restart automatically, and compact placement does not allow it either.
  scheduling {
    provisioning_model          = var.provisioning_model
    preemptible                 = var.provisioning_model == "SPOT"
    automatic_restart           = local.standard && !local.placed
    on_host_maintenance         = local.terminate_on_maintenance ? "TERMINATE" : "MIGRATE"
    instance_termination_action = var.termination_action == "" ? null : var.termination_action

    dynamic "max_run_duration" {
      for_each = var.max_run_hours == null ? [] : [var.max_run_hours]

      content {
        seconds = max_run_duration.value * 3600
      }
    }
  }

  # No block: Compute Engine's default, any matching reservation. Flex-start VMs need
  # NO_RESERVATION; a specific reservation is named by its key and value.
  dynamic "reservation_affinity" {
    for_each = var.reservation_affinity == "" ? [] : [var.reservation_affinity]

    content {
      type = reservation_affinity.value

      dynamic "specific_reservation" {
        for_each = var.reservation_name == "" ? [] : [var.reservation_name]

        content {
          key    = "compute.googleapis.com/reservation-name"
          values = [specific_reservation.value]
        }
      }
    }
  }

  timeouts {
    # How long a VM may take to be created: eight-GPU shapes can take longer than the
    # provider's default 20 minutes, and a flex-start VM waits here for capacity.
    create = var.create_timeout
  }

  depends_on = [
    google_compute_firewall.ssh,
    google_compute_firewall.internal,
    google_compute_firewall.gpu_internal,
    # The boot scripts of private nodes download through the NAT, and the nodes' account can
    # read its buckets from the first boot.
    google_compute_router_nat.nat,
    google_storage_bucket_iam_member.node,
  ]
}

# A flex-start cluster of several nodes is one gang: a managed instance group of no VMs, made
# from this template, to which dlvm adds every node at once with a resize request (named VMs,
# the run duration, and up's wait as its deadline). Dynamic Workload Scheduler then creates
# all of them when it has capacity for all, so no node runs and bills while others wait.
resource "google_compute_instance_template" "flex" {
  count = var.flex_gang ? 1 : 0

  name_prefix  = "dlvm-${var.cluster_name}-"
  description  = "Flex-start nodes of dlvm cluster ${var.cluster_name}."
  machine_type = var.machine_type
  tags         = [local.tag]
  labels       = local.labels
  metadata     = local.metadata

  disk {
    boot         = true
    auto_delete  = true
    source_image = var.image
    disk_size_gb = var.disk_gb
    disk_type    = var.disk_type
    labels       = local.labels
  }

  dynamic "guest_accelerator" {
    for_each = var.guest_accelerators

    content {
      type  = guest_accelerator.value.type
      count = guest_accelerator.value.count
    }
  }

  dynamic "network_interface" {
    for_each = local.nics

    content {
      network    = network_interface.value.network
      subnetwork = network_interface.value.subnetwork
      nic_type   = network_interface.value.nic_type

      dynamic "access_config" {
        for_each = network_interface.value.public ? [1] : []

        content {}
      }
    }
  }

  dynamic "service_account" {
    for_each = var.attach_service_account ? [1] : []

    content {
      email  = local.service_account_email == "" ? null : local.service_account_email
      scopes = ["cloud-platform"]
    }
  }

  # The run duration is the resize request's.
  scheduling {
    provisioning_model          = "FLEX_START"
    automatic_restart           = false
    on_host_maintenance         = "TERMINATE"
    instance_termination_action = "DELETE"
  }

  reservation_affinity {
    type = "NO_RESERVATION"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_instance_group_manager" "flex" {
  count = var.flex_gang ? 1 : 0

  name               = "dlvm-${var.cluster_name}"
  description        = "The flex-start gang of dlvm cluster ${var.cluster_name}."
  zone               = var.zone
  base_instance_name = "${var.cluster_name}-node"
  # Resize requests add the VMs; the group never makes or repairs one by itself.
  target_size        = 0
  wait_for_instances = false

  version {
    instance_template = google_compute_instance_template.flex[0].self_link
  }

  instance_lifecycle_policy {
    default_action_on_failure = "DO_NOTHING"
  }

  update_policy {
    type           = "OPPORTUNISTIC"
    minimal_action = "REFRESH"
  }

  lifecycle {
    # Each fulfilled resize request raises the target size: it is not Terraform's to reset.
    ignore_changes = [target_size]
  }

  depends_on = [
    google_compute_firewall.ssh,
    google_compute_firewall.internal,
    google_compute_firewall.gpu_internal,
    google_compute_router_nat.nat,
    google_storage_bucket_iam_member.node,
  ]
}

# -- the nodes' own service account, with only what the cluster needs ------------------------

resource "google_service_account" "node" {
  count = var.create_service_account ? 1 : 0

  account_id   = var.service_account_id
  display_name = "dlvm cluster ${var.cluster_name}"
  description  = "What the nodes of dlvm cluster ${var.cluster_name} act as: object access on the buckets its storage names, log and metric writing."
}

# Object access on each bucket the cluster's storage names, and nothing else in the bucket's
# project: roles/storage.objectUser where a mount writes, roles/storage.objectViewer where all
# mounts of the bucket are read-only.
resource "google_storage_bucket_iam_member" "node" {
  for_each = var.create_service_account ? var.bucket_grants : {}

  bucket = each.key
  role   = each.value
  member = "serviceAccount:${local.service_account_email}"
}

# Logs and metrics (Ops Agent, gcsfuse's logs) from the nodes' own account.
resource "google_project_iam_member" "node" {
  for_each = var.create_service_account ? toset(var.node_project_roles) : toset([])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${local.service_account_email}"
}

# autostop's `down`: a node deletes its own VM. The role holds only deleting an instance and
# its boot disk, and is granted on the cluster's own instances and disks alone, never on the
# project: a node's token can end this cluster's VMs and nothing else. A flex-start gang's
# VMs are the group's (a resize request made them, not Terraform): a node leaves through the
# group, which deletes the VM and its disk and lowers its size (a VM deleted by itself the
# group would make again), so there the role holds only changing the group, granted on the
# project under a condition that names this cluster's group alone.
resource "google_project_iam_custom_role" "self_delete" {
  count = var.self_delete ? 1 : 0

  role_id     = var.self_delete_role_id
  title       = "dlvm ${var.cluster_name} self-delete"
  description = "Lets the nodes of dlvm cluster ${var.cluster_name} delete their own VMs (autostop down)."
  permissions = var.flex_gang ? ["compute.instanceGroupManagers.update"] : ["compute.instances.delete", "compute.disks.delete"]
}

resource "google_project_iam_member" "self_delete_gang" {
  count = var.self_delete && var.flex_gang ? 1 : 0

  project = var.project
  role    = google_project_iam_custom_role.self_delete[0].id
  member  = "serviceAccount:${local.service_account_email}"

  condition {
    title       = "dlvm ${var.cluster_name} gang"
    description = "Only the flex-start group of dlvm cluster ${var.cluster_name}."
    expression  = "resource.name == \"projects/${var.project}/zones/${var.zone}/instanceGroupManagers/${google_compute_instance_group_manager.flex[0].name}\""
  }
}

resource "google_compute_instance_iam_member" "self_delete" {
  for_each = var.self_delete ? google_compute_instance.node : {}

  project       = var.project
  zone          = each.value.zone
  instance_name = each.value.name
  role          = google_project_iam_custom_role.self_delete[0].id
  member        = "serviceAccount:${local.service_account_email}"
}

resource "google_compute_disk_iam_member" "self_delete" {
  for_each = var.self_delete ? google_compute_instance.node : {}

  project = var.project
  zone    = each.value.zone
  # The boot disk made with the VM is named after it.
  name   = each.value.name
  role   = google_project_iam_custom_role.self_delete[0].id
  member = "serviceAccount:${local.service_account_email}"
}
