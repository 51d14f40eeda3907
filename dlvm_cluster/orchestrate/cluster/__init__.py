"""The cluster's life: bring it up, power it, scale it, report on it, tear it down.

context     `Cluster`: one cluster for one command (state dir, lock, records, provider, the
            one SSH pool, jobs), handed to every stage
lifecycle   up, down, plan, render, start: spec -> provider -> inventory -> SSH -> setup
prepare     bring nodes to the spec (up, start, scale and a recovery alike)
power       stop, start, usage hours, stop marks
scale       grow or shrink a live cluster, elastic jobs kept running
autostop    the idle guard's program and settings on the nodes
report      status: nodes, their machines' states, prices, jobs
files       sync and setup: spec files and setup script -> nodes
mesh        intra-cluster SSH: keys and pinned host keys on every node
framework_setup  a framework's node software (Horovod), built once on the head and shared
framework_supply what this machine sends for it: nodes need no package index
doctor      what this machine and the spec's provider need
records     the formats of the state dir's records: inventory, applied spec, provider kind
"""
