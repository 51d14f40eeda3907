"""The cluster's life: bring it up, power it, scale it, report on it, tear it down.

lifecycle   up, down, plan, render: spec -> provider -> inventory -> SSH -> files -> setup
power       stop, start, usage hours, stop marks
scale       grow or shrink a live cluster, elastic jobs kept running
autostop    the idle guard's program and settings on the nodes
report      status: nodes, their machines' states, prices, jobs
files       sync and setup: spec files and setup script -> nodes
mesh        intra-cluster SSH: keys and pinned host keys on every node
horovod     Horovod built once on the head and shared with the nodes
doctor      what this machine and the spec's provider need
reach       what providers may learn over SSH, handed to them from here
records     what the state dir remembers: inventory, applied spec
"""
