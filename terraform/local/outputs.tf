output "nodes" {
  description = "Every node by name: rank, address, SSH port and user, and the SSH host public key its provisioner generated."
  value = {
    for name, node in terraform_data.node : name => {
      rank = var.nodes[name].rank
      ip   = var.nodes[name].ip
      port = 22
      user = var.ssh_user
      # The key file is named after the node's resource id, which is unknown until the node
      # exists: Terraform reads it only once node-up has written it.
      host_key = try(trimspace(file("${var.state_dir}/nodes/${name}/host_key.${node.id}.pub")), "")
    }
  }
}
