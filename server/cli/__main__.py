"""`python -m server.cli`."""

from server.cli.main import main

if __name__ == "__main__":
    main()
