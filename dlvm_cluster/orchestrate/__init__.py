"""The stages of each verb: the only package that knows both Terraform and SSH.

lifecycle   up, down, plan, render: spec -> render -> terraform -> inventory -> readiness
nodes       exec, status, ssh-config: inventory -> SSH fan-out
files       sync and setup: spec files and setup script -> nodes
records     what the state dir remembers: inventory, applied spec
"""
