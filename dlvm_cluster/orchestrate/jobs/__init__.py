"""Jobs: launch plans become detached runs on the nodes, followed by a supervisor.

verbs               launch, logs, cancel, and the job records in the state dir
supervise           follow a run; replace lost nodes, restart or fail
supervisor_process  the detached supervisor program (`python -m ...jobs.supervisor_process`)
"""
