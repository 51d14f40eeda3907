variable "cluster_name" {
  description = "Name of the cluster; prefixes namespaces and labels."
  type        = string
}

variable "state_dir" {
  description = "Absolute path of the cluster's state directory; node directories are created under it."
  type        = string
}

variable "network" {
  description = "The cluster's bridge and /24 subnet, derived from the cluster name so clusters live side by side."
  type = object({
    bridge     = string
    gateway_ip = string
    prefix_len = number
    # Host-side veth names start with this (interface names are at most 15 characters).
    veth_prefix = string
  })
}

variable "nodes" {
  description = "Nodes keyed by name: removing a key destroys only that node."
  type = map(object({
    rank = number
    ip   = string
    veth = string
  }))
}

variable "authorized_keys_file" {
  description = "Absolute path of the authorized_keys file every node's sshd accepts."
  type        = string
}

variable "ssh_user" {
  description = "User the nodes are reached as (root: namespaces need it)."
  type        = string
  default     = "root"
}

variable "keep_paths" {
  description = "Host directories under /tmp that stay visible on the nodes above their private /tmp (the Python environment dlvm runs from)."
  type        = list(string)
  default     = []
}

variable "node_path" {
  description = "PATH for login shells on the nodes (written to each node's own ~/.bashrc)."
  type        = string
  default     = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

variable "storage_dir" {
  description = "Absolute path of the host folder that stands in for Cloud Storage ($DLVM_HOME/storage): every node sees it at /run/dlvm/storage, and dlvm bind-mounts the spec's buckets from there."
  type        = string
  default     = ""
}
