"""The stages of each verb: the only package that knows both providers and SSH.

lifecycle   up, down, plan, render: spec -> provider -> inventory -> SSH -> files -> setup
nodes       exec, status, ssh-config: inventory -> SSH fan-out
files       sync and setup: spec files and setup script -> nodes
mesh        intra-cluster SSH: keys and pinned host keys on every node
jobs        launch, logs, cancel: launch plans -> detached jobs on the nodes
scale       grow or shrink a live cluster, elastic jobs kept running
report      status: nodes, their machines' states, prices, jobs
doctor      what this machine and the spec's provider need
reach       what providers may learn over SSH, handed to them from here
records     what the state dir remembers: inventory, applied spec
"""
