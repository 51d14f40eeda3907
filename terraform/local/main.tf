locals {
  script = "${path.module}/node.sh"
  hosts = join("", [
    for name, node in var.nodes : "${node.ip} ${name}\n"
  ])
}

# The bridge every node's veth is attached to; the host side holds the gateway address.
resource "terraform_data" "network" {
  input = {
    script     = local.script
    bridge     = var.network.bridge
    gateway_ip = var.network.gateway_ip
    prefix_len = var.network.prefix_len
    state_dir  = var.state_dir
  }

  provisioner "local-exec" {
    command = "${self.input.script} network-up"
    environment = {
      BRIDGE     = self.input.bridge
      GATEWAY_IP = self.input.gateway_ip
      PREFIX_LEN = self.input.prefix_len
      STATE_DIR  = self.input.state_dir
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "${self.input.script} network-down"
    environment = {
      BRIDGE    = self.input.bridge
      STATE_DIR = self.input.state_dir
    }
  }
}

# /etc/hosts of every node, rewritten in place when the node set changes (nodes bind-mount it).
resource "terraform_data" "hosts" {
  triggers_replace = local.hosts
  depends_on       = [terraform_data.network]

  provisioner "local-exec" {
    command = "${local.script} hosts"
    environment = {
      STATE_DIR = var.state_dir
      HOSTS     = local.hosts
    }
  }
}

# One node: a network namespace on the bridge, a private mount and UTS namespace held by a
# small init process (own hostname, home and /tmp), and its own sshd.
resource "terraform_data" "node" {
  for_each   = var.nodes
  depends_on = [terraform_data.hosts]

  input = {
    script = local.script
    name   = each.key
    ip     = each.value.ip
    veth   = each.value.veth
    # The veth prefix is unique on the host, so same-named clusters of two DLVM_HOMEs never
    # share a namespace name.
    namespace   = "dlvm-${var.cluster_name}-${each.key}-${var.network.veth_prefix}"
    bridge      = var.network.bridge
    gateway_ip  = var.network.gateway_ip
    prefix_len  = var.network.prefix_len
    state_dir   = var.state_dir
    keys_file   = var.authorized_keys_file
    keep_paths  = join(":", var.keep_paths)
    node_path   = var.node_path
    storage_dir = var.storage_dir
  }

  provisioner "local-exec" {
    command = "${self.input.script} node-up"
    environment = {
      NODE            = self.input.name
      NODE_ID         = self.id
      NODE_IP         = self.input.ip
      VETH            = self.input.veth
      NAMESPACE       = self.input.namespace
      BRIDGE          = self.input.bridge
      GATEWAY_IP      = self.input.gateway_ip
      PREFIX_LEN      = self.input.prefix_len
      STATE_DIR       = self.input.state_dir
      AUTHORIZED_KEYS = self.input.keys_file
      KEEP_PATHS      = self.input.keep_paths
      NODE_PATH       = self.input.node_path
      STORAGE_DIR     = self.input.storage_dir
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "${self.input.script} node-down"
    environment = {
      NODE      = self.input.name
      VETH      = self.input.veth
      NAMESPACE = self.input.namespace
      STATE_DIR = self.input.state_dir
    }
  }
}
