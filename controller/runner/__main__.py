import sys

from controller.runner.worker import main

sys.exit(main(sys.argv))
