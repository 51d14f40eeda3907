"""Launchers: (job, inventory) -> per-node commands and environments, as plain values.

    frameworks   the FRAMEWORKS registry: name -> planner, elasticity, node software
    planners     plan_launch: a job's layout, handed to its framework's planner
    plan         the types every planner shares (JobLayout, LaunchPlan) and their helpers
    environment  the environment every setup, exec and job process gets (a contract)
    torchrun, horovod, deepspeed, accelerate, mpi, none: one planner each

Importing this package imports nothing: `exec` needs only `environment`, and the planners
bring in the spec models (pydantic), which the warm exec path does without.
"""
