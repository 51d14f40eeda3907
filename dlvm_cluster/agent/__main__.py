"""`python -m dlvm_cluster.agent STATE_DIR`: how remote/agent_process.spawn starts the agent."""

import sys

from dlvm_cluster.agent.server import main

sys.exit(main(sys.argv[1:]))
