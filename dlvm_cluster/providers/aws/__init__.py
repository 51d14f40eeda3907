"""The Amazon EC2 provider: Terraform variables, and the AWS API calls around Terraform.

    config       the cluster file's aws keys: AwsConfig (provider:) and AwsNodes (nodes:)
    rules        what EC2 would refuse, checked at load with the file's positions
    kind         the registry entry (keys, rules, implementation)
    shapes       what dlvm knows of EC2 GPU types: vCPUs, GPUs, EFA interfaces, quotas (pure)
    tfvars       spec -> terraform.tfvars.json for terraform/aws (pure)
    gpu_network  the EFA layout and the settings jobs need for NCCL over EFA (pure)
    api          boto3 clients of a region and AWS errors made actionable
    preflight    zones, type, reservation or Capacity Block, vCPU quota, AMI, subnet, buckets
    converge     `up`: stopped nodes started, preflight, zone failover, host keys
    hostkeys     nodes' SSH host keys from the console output, so they are pinned, not trusted
    instances    instance states for `status` (Spot interruptions as preempted), stop, start
    power        what a node runs for autostop, and the stops it made
    storage      S3 buckets mounted with Mountpoint for Amazon S3 under systemd
    pricing      On-Demand and Spot prices asked of AWS
    report       plan notes, capacity facts, status price

The modules that call AWS import boto3 inside functions: importing this package (or `dlvm
--help`) never loads it.
"""
