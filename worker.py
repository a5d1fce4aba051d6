"""`python worker.py`: the same as `paysaga worker` (the worker lives in `paysaga.worker`)."""

from paysaga.worker import main

if __name__ == "__main__":
    main()
