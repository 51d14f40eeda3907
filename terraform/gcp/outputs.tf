output "nodes" {
  description = "Every node by name: rank, address (external if it has one, else internal), internal address, SSH port and user, zone, VM name, and host_key. host_key is empty: Compute Engine publishes host keys to guest attributes after boot, and dlvm reads them there."
  value = {
    for name, vm in google_compute_instance.node : name => {
      rank        = var.nodes[name].rank
      ip          = coalesce(try(vm.network_interface[0].access_config[0].nat_ip, ""), vm.network_interface[0].network_ip)
      internal_ip = vm.network_interface[0].network_ip
      port        = 22
      user        = var.ssh_user
      zone        = vm.zone
      instance    = vm.name
      host_key    = ""
    }
  }
}

output "flex_gang" {
  description = "The managed instance group of a flex-start gang (its nodes are added by dlvm and are not in `nodes`); empty for VMs made one per node."
  value       = try(google_compute_instance_group_manager.flex[0].name, "")
}

output "zone" {
  description = "The zone the nodes are in."
  value       = var.zone
}

output "network" {
  description = "The VPC network the nodes are in (created for the cluster, or the one given)."
  value       = local.network
}

output "gpu_networks" {
  description = "The VPC networks made for GPU traffic, in the order of the NICs they serve (nic1 on): one per GPU gVNIC, then the RDMA network; empty for shapes without them."
  value       = concat(google_compute_network.gpu[*].self_link, google_compute_network.rdma[*].self_link)
}
