import sys

from tacleaner_cli import main

sys.exit(main())
