from dlvm_cluster.cli.app import main

main()
