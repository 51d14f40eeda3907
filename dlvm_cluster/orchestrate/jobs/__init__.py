"""Jobs: launch plans become detached runs on the nodes, followed by a supervisor.

store               the job records (one file each, changed under a lock), cancel requests,
                    supervisor processes
on_nodes            a job's files, start, stop, and joining a running elastic job
verbs               launch, logs, cancel, job states
policy              what follows a failed run: a pure decision, table-tested
follow              one run followed: how it ended, the hang clock, stopping it everywhere
supervise           the loop that follows a job and carries out the policy
supervisor_process  the detached supervisor program (`python -m ...jobs.supervisor_process`)
"""
