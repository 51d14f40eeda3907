"""`dlvm check`: probe every node's Python and torch, then measure the network between them.

run         the verb and `require_healthy` (a job's `check: true`)
output      what the nodes print, parsed and bounded
verdicts    measurements -> verdicts and hints
"""
