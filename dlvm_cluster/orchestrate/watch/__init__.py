"""What `dlvm top` and `dlvm dashboard` show of clusters, changing nothing.

metrics     one sampling round on every node per refresh, the node far below the others
overview    a cluster's nodes, machine states, spend, autostop and jobs, read without SSH
"""
