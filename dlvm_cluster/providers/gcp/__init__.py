"""The Google Compute Engine provider: Terraform variables, and the API calls around Terraform.

    kind         the registry entry: keys, rules, implementation (providers/registry.py)
    config       the cluster file's gcp keys: GcpConfig (`provider:`), GcpNodes (`nodes:`)
    rules        Compute Engine's rules checked at load, with file:line (pure)
    plan         a spec resolved once: gcp keys, node shape, capacity, GPU network (pure)
    tfvars       spec -> terraform.tfvars.json for terraform/gcp (pure)
    shapes       what dlvm knows of machine families: built-in GPUs, gVNIC, defaults (pure)
    credentials  Application Default Credentials and the Compute API clients
    preflight    project, zones, machine and GPU types, quotas and image checked before apply
    converge     `up`: bring stopped nodes back, preflight, the zone loop, host keys
    zone_loop    apply in one zone after another until one takes the cluster
    failover     an apply error -> try the next zone, or stop with the fix (pure)
    leftovers    the cluster's VMs a zone keeps outside Terraform's state, deleted on leaving it
    hostkeys     nodes' SSH host keys from guest attributes, so they are pinned, not trusted
    instances    instance states for `status`, preempted Spot nodes included
    pricing      a dated price table and the hourly cost of a cluster (pure)

The modules that call the Compute API (credentials, preflight, reservations, hostkeys,
instances, leftovers) import google-cloud-compute inside functions: importing this package (or
`dlvm --help`) never loads the Google client.
"""
