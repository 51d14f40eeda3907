"""The stages of each verb: the only package that knows both providers and SSH.

cluster     the cluster's life: up, down, plan, start, stop, scale, status, autostop, doctor
nodes       exec, sync, ssh-config, node status; secret masking of node output
jobs        launch, logs, cancel; the supervisor that follows and recovers a job
check       node and network health checks
"""
