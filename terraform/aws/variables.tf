variable "cluster_name" {
  description = "The cluster's name: names and tags every resource."
  type        = string
}

variable "region" {
  description = "The AWS region of the cluster."
  type        = string
}

variable "zone" {
  description = "The Availability Zone the nodes (and the subnet dlvm makes) are in."
  type        = string
}

variable "profile" {
  description = "A named profile of the AWS config files; empty: the SDK's default chain."
  type        = string
  default     = ""
}

variable "nodes" {
  description = "The nodes by name, with their rank."
  type        = map(object({ rank = number }))
}

variable "instance_type" {
  description = "The EC2 instance type of every node."
  type        = string
}

variable "ami" {
  description = "The AMI id the nodes boot; empty: the one ami_parameter names."
  type        = string
  default     = ""
}

variable "ami_parameter" {
  description = "An SSM parameter holding the AMI id (the Deep Learning AMIs' public ones), read at plan time."
  type        = string
  default     = ""
}

variable "disk_gb" {
  description = "The root volume's size in GiB."
  type        = number
}

variable "disk_type" {
  description = "The root volume's EBS type."
  type        = string
  default     = "gp3"
}

variable "market" {
  description = "How the instances are bought: on-demand, spot or capacity-block."
  type        = string

  validation {
    condition     = contains(["on-demand", "spot", "capacity-block"], var.market)
    error_message = "market must be on-demand, spot or capacity-block."
  }
}

variable "reservation_preference" {
  description = "Whether instances may use open capacity reservations (open) or none (none); empty when reservation_id targets one."
  type        = string
  default     = "open"
}

variable "reservation_id" {
  description = "The On-Demand Capacity Reservation or Capacity Block (cr-...) the instances launch into; empty: none targeted."
  type        = string
  default     = ""
}

variable "efa_interfaces" {
  description = "The EFA-only interfaces of each node: network card and device index of each."
  type        = list(object({ network_card = number, device_index = number }))
  default     = []
}

variable "placement_group" {
  description = "Place the nodes in a cluster placement group (close together, for EFA)."
  type        = bool
  default     = false
}

variable "public_ip" {
  description = "Give each node an Elastic IP on its primary interface; false: private addresses only."
  type        = bool
  default     = true
}

variable "allowed_ssh_cidrs" {
  description = "The address ranges SSH is allowed from."
  type        = list(string)
}

variable "vpc_id" {
  description = "An existing VPC; empty: one is made for the cluster."
  type        = string
  default     = ""
}

variable "subnet_id" {
  description = "An existing subnet of vpc_id in zone; empty: one is made."
  type        = string
  default     = ""
}

variable "vpc_cidr" {
  description = "The address range of the VPC dlvm makes (its one subnet takes all of it)."
  type        = string
  default     = "10.72.0.0/16"
}

variable "ssh_user" {
  description = "The user the key pair logs in as (the AMI's default user)."
  type        = string
  default     = "ubuntu"
}

variable "ssh_public_key" {
  description = "The cluster's SSH public key."
  type        = string
}

variable "self_delete" {
  description = "Let each node terminate the cluster's instances (autostop action down); nothing else."
  type        = bool
  default     = false
}

variable "buckets" {
  description = "The S3 buckets the nodes mount, by name, and whether any mount of each writes."
  type        = map(object({ writable = bool }))
  default     = {}
}
