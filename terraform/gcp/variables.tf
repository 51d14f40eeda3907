variable "cluster_name" {
  description = "Name of the cluster: prefixes every resource name and labels every resource that takes labels."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-40 of a-z, 0-9 and -, start with a letter and not end with -."
  }
}

variable "project" {
  description = "Google Cloud project the cluster is created in."
  type        = string
}

variable "region" {
  description = "Region of the zone: where the subnetwork and the placement policy live."
  type        = string
}

variable "zone" {
  description = "Zone every node is created in (dlvm moves to the next zone of the spec on a stockout)."
  type        = string
}

variable "nodes" {
  description = "Nodes keyed by name, with their rank: removing a key destroys only that node."
  type = map(object({
    rank = number
  }))
}

variable "machine_type" {
  description = "Machine type of every node, e.g. a2-highgpu-1g, g2-standard-12 or n1-standard-8."
  type        = string
}

variable "guest_accelerators" {
  description = "GPUs to attach to each node (N1 machine types). Empty for types that carry their GPUs (a2, a3, g2) and for CPU nodes."
  type = list(object({
    type  = string
    count = number
  }))
  default = []
}

variable "install_nvidia_driver" {
  description = "Whether the nodes have GPUs: asks the Deep Learning VM image to install the NVIDIA driver, and stops the nodes (instead of migrating them) on host maintenance."
  type        = bool
  default     = false
}

variable "image" {
  description = "Boot image: projects/P/global/images/family/F (newest image of a family) or projects/P/global/images/NAME."
  type        = string
}

variable "disk_gb" {
  description = "Boot disk size in GB; at least the image's own size."
  type        = number

  validation {
    condition     = var.disk_gb >= 10 && floor(var.disk_gb) == var.disk_gb
    error_message = "disk_gb must be a whole number of at least 10."
  }
}

variable "create_timeout" {
  description = "How long each VM may take to be created (a flex-start VM waits for capacity meanwhile), as a duration such as 30m or 2h."
  type        = string
  default     = "30m"

  validation {
    condition     = can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", var.create_timeout)) && var.create_timeout != ""
    error_message = "create_timeout must be a duration such as 90s, 30m, 2h or 1h30m."
  }
}

variable "disk_type" {
  description = "Boot disk type, e.g. pd-balanced, pd-ssd or hyperdisk-balanced."
  type        = string
  default     = "pd-balanced"
}

variable "provisioning_model" {
  description = "How Compute Engine provides the VMs: STANDARD (on demand), SPOT (much cheaper, may be preempted at any time), FLEX_START (Dynamic Workload Scheduler: waits for capacity, runs at most max_run_hours) or RESERVATION_BOUND (lives as long as the reservation it is bound to)."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["STANDARD", "SPOT", "FLEX_START", "RESERVATION_BOUND"], var.provisioning_model)
    error_message = "provisioning_model must be STANDARD, SPOT, FLEX_START or RESERVATION_BOUND."
  }
}

variable "termination_action" {
  description = "What Compute Engine does to a VM it ends (a preempted Spot VM, one past max_run_hours, a flex-start or reservation-bound VM at its end): DELETE (the next apply recreates it) or STOP; empty for standard VMs without max_run_hours."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "DELETE", "STOP"], var.termination_action)
    error_message = "termination_action must be DELETE, STOP or empty."
  }
}

variable "max_run_hours" {
  description = "Hours each VM may run before Compute Engine applies termination_action (required for FLEX_START, at most 168 there); null for no limit."
  type        = number
  default     = null

  validation {
    condition     = var.max_run_hours == null ? true : var.max_run_hours >= 1 && floor(var.max_run_hours) == var.max_run_hours
    error_message = "max_run_hours must be a whole number of at least 1, or null."
  }
}

variable "reservation_affinity" {
  description = "Which reservations the VMs consume: ANY_RESERVATION, SPECIFIC_RESERVATION (reservation_name), NO_RESERVATION, or empty for Compute Engine's default (any matching one)."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "ANY_RESERVATION", "SPECIFIC_RESERVATION", "NO_RESERVATION"], var.reservation_affinity)
    error_message = "reservation_affinity must be ANY_RESERVATION, SPECIFIC_RESERVATION, NO_RESERVATION or empty."
  }
}

variable "reservation_name" {
  description = "The reservation a SPECIFIC_RESERVATION affinity consumes: its name, or projects/P/reservations/R for one shared from another project."
  type        = string
  default     = ""
}

variable "compact_placement" {
  description = "Place the nodes close together (a compact placement policy) for lower latency between them."
  type        = bool
  default     = false
}

variable "flex_gang" {
  description = "Make the nodes as one flex-start gang: an instance template and a managed instance group to which dlvm adds all nodes at once with a resize request, instead of one VM per node."
  type        = bool
  default     = false
}

variable "placement_policy" {
  description = "An existing placement policy the nodes name instead of one of their own: the compact placement policy of the reservation they consume (a VM consumes such a reservation only if it names the same policy)."
  type        = string
  default     = ""

  validation {
    condition     = var.placement_policy == "" || can(regex("^projects/[^/]+/regions/[^/]+/resourcePolicies/[^/]+$", var.placement_policy))
    error_message = "placement_policy must be empty or projects/P/regions/R/resourcePolicies/NAME."
  }
}

variable "nic_type" {
  description = "Network interface type: GVNIC, VIRTIO_NET, or empty for Compute Engine's default."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "GVNIC", "VIRTIO_NET"], var.nic_type)
    error_message = "nic_type must be GVNIC, VIRTIO_NET or empty."
  }
}

variable "gpu_vpc_nics" {
  description = "NICs beside the primary one, each on a VPC and subnetwork of its own that the module makes: the GPU NICs of a3-highgpu-8g (4) and a3-megagpu-8g (8), the second gVNIC of a3-ultragpu-8g and a4-highgpu-8g (1); 0 for other shapes."
  type        = number
  default     = 0

  validation {
    condition     = contains([0, 1, 4, 8], var.gpu_vpc_nics)
    error_message = "gpu_vpc_nics must be 0, 1, 4 or 8."
  }
}

variable "gpu_vpc_mtu" {
  description = "MTU of the VPCs of var.gpu_vpc_nics (8244 for GPUDirect-TCPX/TCPXO, 8896 beside RDMA)."
  type        = number
  default     = 8244

  validation {
    condition     = var.gpu_vpc_mtu >= 1300 && var.gpu_vpc_mtu <= 8896
    error_message = "gpu_vpc_mtu must be between 1300 and 8896."
  }
}

variable "rdma_nics" {
  description = "MRDMA NICs (8 on a3-ultragpu-8g and a4-highgpu-8g, else 0), all on one VPC made with the zone's RoCE network profile, one subnetwork each."
  type        = number
  default     = 0

  validation {
    condition     = contains([0, 8], var.rdma_nics)
    error_message = "rdma_nics must be 0 or 8."
  }
}

variable "gpu_cidr_range" {
  description = "Address range the subnetworks of the GPU and RDMA VPCs are cut from (a /17 each); apart from the cluster network's, since every NIC of a VM must be in a different range."
  type        = string
  default     = "172.16.0.0/12"

  validation {
    condition     = can(cidrsubnet(var.gpu_cidr_range, 5, 31))
    error_message = "gpu_cidr_range must be an address range of /27 or wider, such as 172.16.0.0/12."
  }
}

variable "startup_script" {
  description = "Script each node runs as root at every boot (startup-script metadata): the NCCL plugin of the GPU network and its receive-data-path manager; empty for none."
  type        = string
  default     = ""
}

variable "network" {
  description = "Existing VPC network (name or self link) to put the nodes in; empty to create one for the cluster."
  type        = string
  default     = ""
}

variable "subnetwork" {
  description = "Existing subnetwork (name or self link) of var.network in var.region; empty to use the network alone (auto mode) or the created one."
  type        = string
  default     = ""
}

variable "subnet_cidr" {
  description = "Address range of the subnetwork created when var.network is empty."
  type        = string
  default     = "10.64.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an address range such as 10.64.0.0/20."
  }
}

variable "public_ip" {
  description = "Give each node an ephemeral external address (needed to reach the nodes over SSH from outside the VPC)."
  type        = bool
  default     = true
}

variable "allowed_ssh_cidrs" {
  description = "Address ranges allowed to reach the nodes on tcp/22 when they have external addresses; nothing else is opened from outside."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.allowed_ssh_cidrs : can(cidrhost(cidr, 0))])
    error_message = "allowed_ssh_cidrs must be address ranges such as 203.0.113.7/32."
  }
}

variable "iap_source_range" {
  description = "The range Identity-Aware Proxy's TCP forwarding connects from: SSH to private nodes is allowed from it alone."
  type        = string
  default     = "35.235.240.0/20"
}

variable "manage_firewall" {
  description = "Make the cluster's firewall rules (SSH in, all traffic between the nodes); false where a network administrator makes them."
  type        = bool
  default     = true
}

variable "network_project" {
  description = "The project var.network lives in (the host project of a Shared VPC), where the firewall rules go; empty for var.project."
  type        = string
  default     = ""
}

variable "os_login" {
  description = "Turn OS Login on for the nodes: the key is on the user's OS Login profile and no ssh-keys metadata is set."
  type        = bool
  default     = false
}

variable "ssh_user" {
  description = "User created on every node for the cluster's SSH key (through the ssh-keys metadata)."
  type        = string
  default     = "dlvm"
}

variable "ssh_public_key" {
  description = "The cluster's SSH public key (OpenSSH format) authorized for ssh_user on every node."
  type        = string
}

variable "attach_service_account" {
  description = "Attach a service account to the nodes, with the cloud-platform scope so its IAM roles alone decide what they reach (Cloud Storage, Artifact Registry, Logging); false: none, and nothing on the nodes can call Google APIs."
  type        = bool
  default     = true
}

variable "service_account_email" {
  description = "Email of the existing service account the nodes act as; empty for the project's Compute Engine default service account. Unused when create_service_account is true."
  type        = string
  default     = ""
}

variable "create_service_account" {
  description = "Make a service account for this cluster alone (service_account_id) and attach it to the nodes."
  type        = bool
  default     = false
}

variable "service_account_id" {
  description = "The account id of the service account made when create_service_account is true."
  type        = string
  default     = ""

  validation {
    condition     = var.service_account_id == "" || can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "bucket_grants" {
  description = "Cloud Storage bucket name -> the role the nodes' service account gets on it (roles/storage.objectUser or roles/storage.objectViewer)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for role in values(var.bucket_grants) : contains(["roles/storage.objectUser", "roles/storage.objectViewer"], role)])
    error_message = "bucket_grants may give roles/storage.objectUser or roles/storage.objectViewer only."
  }
}

variable "node_project_roles" {
  description = "Roles on var.project for the service account made for the cluster (log and metric writing)."
  type        = list(string)
  default     = ["roles/logging.logWriter", "roles/monitoring.metricWriter"]
}

variable "self_delete" {
  description = "Let the nodes' service account delete the cluster's own VMs and boot disks (autostop's down), through a custom role granted on each of them (on a flex-start gang's group: deleting its VMs through it)."
  type        = bool
  default     = false
}

variable "self_delete_role_id" {
  description = "Id of the project custom role self_delete makes."
  type        = string
  default     = ""

  validation {
    condition     = var.self_delete_role_id == "" || can(regex("^[a-zA-Z0-9_.]{3,64}$", var.self_delete_role_id))
    error_message = "self_delete_role_id must be 3-64 letters, digits, '_' or '.'."
  }
}
