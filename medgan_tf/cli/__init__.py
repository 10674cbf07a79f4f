"""The `medgan-tf` command: one entry point, one module per subcommand in this package.

Each subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`,
which parses nothing itself and calls one library function. Modules import TensorFlow inside
`run`, so `medgan-tf --help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence


def subcommands() -> dict[str, object]:
    """Subcommand name → module, in the order `medgan-tf --help` shows them (the path from data
    to a served model). Imported explicitly: a missing module is an ImportError, not a gap."""
    from medgan_tf.cli import (bench, convert, demo, doctor, evaluate, export, reproduce, summary, synth, tasks,
                               train, translate)

    return {
        "tasks": tasks,
        "synth": synth,
        "convert": convert,
        "summary": summary,
        "train": train,
        "export": export,
        "translate": translate,
        "evaluate": evaluate,
        "demo": demo,
        "reproduce": reproduce,
        "bench": bench,
        "doctor": doctor,
    }


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python logging out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TF 2.21 prints oneDNN/CUDA notices from C++ before absl logging is initialised, so
    TF_CPP_MIN_LOG_LEVEL cannot silence them; muting stderr for the import alone can.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medgan-tf",
        description="MedGAN medical image-to-image translation (PET→CT, MR motion correction, "
        "PET denoising): convert data, train, export, translate, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in subcommands().items():
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run, _pass_through=getattr(module, "PASS_THROUGH_UNKNOWN_ARGS", False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tensorflow()
    parser = build_parser()
    # Subcommands with PASS_THROUGH_UNKNOWN_ARGS (e.g. convert: Beam pipeline options) receive
    # unrecognized options as args.extra_args; for all others they stay an error.
    args, extra_args = parser.parse_known_args(argv)
    if extra_args and not getattr(args, "_pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra_args)}")
    args.extra_args = extra_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if not args.verbose:
        import_tensorflow_quietly()
    quiet_tensorflow()
    from medgan_tf.errors import UserError, no_room_error

    try:
        return int(args._run(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a full disk is the user's to fix, not a bug: one line, not a traceback
        failure = no_room_error(error)
        if failure is None:
            raise
        logging.debug("the write that failed", exc_info=True)
        print(f"error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from medgan_tf import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
