from dastra_kafka.cli import main

main()
