from dlvm_cluster.cli.fast_path import main

main()
