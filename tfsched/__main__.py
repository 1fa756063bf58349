from tfsched.cli import main

main()
