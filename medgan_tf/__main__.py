import sys

from medgan_tf.cli import main

sys.exit(main())
