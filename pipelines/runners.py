"""Which Beam runner converts, with which options: the DirectRunner as Beam's local FnApiRunner
whose multi_processing workers are `pipelines.worker` (they exit with the converter), any other
runner as named by --runner, and Beam's own logging kept off the user's terminal."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
from typing import Any, Callable, Sequence

# Importing Beam logs notices about optional Google Cloud clients this pipeline does not use.
_root_level = logging.getLogger().level
logging.getLogger().setLevel(logging.ERROR)
try:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
finally:
    logging.getLogger().setLevel(_root_level)

from medgan_tf.errors import UserError
from pipelines import worker


def import_beam(module: str) -> Any:
    """The Beam module `module` (e.g. "apache_beam.ml.inference.base"), imported without the
    notices Beam logs about optional Google Cloud clients."""
    import importlib

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    finally:
        logging.getLogger().setLevel(level)
from pipelines.options import ConvertOptions, add_arguments


def check_beam_args(beam_args: Sequence[str], own_arguments: Callable[[argparse.ArgumentParser], Any] = add_arguments,
                    command: str = "convert") -> None:
    """Raises UserError naming the first of `beam_args` that no registered Beam pipeline option
    knows, with the nearest flag of the command (`own_arguments` adds its flags to a parser;
    default the converter's) or of Beam: Beam itself drops such words, so a typo (`--spacng
    2,2,2`) would run with the default and exit 0."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for options_class in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)  # how PipelineOptions.get_all_options collects them
    _, unknown = parser.parse_known_args(list(beam_args))
    if not unknown:
        return
    word = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    flag = word.split("=", 1)[0]
    own = argparse.ArgumentParser(add_help=False)
    own_arguments(own)
    known = [name for known_parser in (own, parser) for name in known_parser._option_string_actions if name.startswith("--")]
    nearest = difflib.get_close_matches(flag, known, n=1)
    what = "the converter" if command == "convert" else f"`{command}`"
    hint = f"; did you mean {nearest[0]}?" if nearest else f" (`medgan-tf {command} --help` lists {what}'s options)"
    if not flag.startswith("-"):
        raise UserError(f"unexpected argument {flag!r}: neither {what} nor Beam takes it")
    raise UserError(f"unknown option {flag}: neither {what} nor Beam's pipeline options know it{hint}")


def pipeline_options(convert_options: ConvertOptions | Any, beam_args: Sequence[str]) -> Any:
    """Beam's PipelineOptions: `beam_args` (flags the command does not know) with the runner and
    worker processes of `convert_options` (its `runner` and `num_workers`; any command's options)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = list(beam_args) + [f"--runner={convert_options.runner}"]
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in beam_args):
        # Beam's worker processes log every channel and bundle at INFO on our stderr, and a failed
        # step as a traceback before the pipeline raises it; keep the user's terminal for this
        # converter's own messages (its one-line errors; pass the option to see Beam's again).
        options.append("--default_sdk_harness_log_level=CRITICAL")
        for name in ("apache_beam", "root.apache_beam"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if convert_options.num_workers:
        options += [f"--direct_num_workers={convert_options.num_workers}", "--direct_running_mode=multi_processing"]
    return PipelineOptions(options)


def pipeline_runner(runner: str, options: Any) -> Any:
    """The runner to use: for DirectRunner, Beam's local FnApiRunner itself.

    Since Beam 2.68 the DirectRunner first tries Prism, which downloads a Go binary from GitHub
    (and, offline, fails before falling back); the FnApiRunner is the engine it falls back to and
    the one that implements direct_num_workers / multi_processing. Other runners are used as named
    (`runner`, as in --runner; `options` Beam's PipelineOptions).
    """
    if runner.lower() not in ("directrunner", "direct"):
        return None  # taken from --runner in the options
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return WatchedWorkersRunner(provision_info=provision)


class WatchedWorkersRunner(fn_runner.FnApiRunner):
    """The FnApiRunner, whose multi_processing workers run as `pipelines.worker`: Beam's SDK
    harness in processes that exit when this converter process ends, however it ends."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> Any:
        from apache_beam.options.pipeline_options import DirectOptions, WorkerOptions
        from apache_beam.transforms.environments import SubprocessSDKEnvironment

        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode == "multi_processing":
            # Any other mode name keeps FnApiRunner from replacing this environment with its own
            # `python -m apache_beam.runners.worker.sdk_worker_main` (and is not "in_memory").
            direct.direct_running_mode = "multi_processing (watched workers)"
            level = str(options.view_as(WorkerOptions).default_sdk_harness_log_level or "INFO").upper()
            command = worker.command_line(os.getpid(), quiet=level in ("ERROR", "CRITICAL"))
            self._default_environment = SubprocessSDKEnvironment.from_command_string(command)
        return super().run_pipeline(pipeline, options)


def run_pipeline(options: ConvertOptions | Any, beam_args: Sequence[str], build: Callable[[beam.Pipeline], None]) -> None:
    """Build (`build(pipeline)`) and run one Beam pipeline on `options.runner` with
    `options.num_workers` and the other `beam_args`; a job service that never answers (e.g. a
    PortableRunner's --job_endpoint nobody listens on) is one UserError saying what to do."""
    beam_options = pipeline_options(options, beam_args)
    try:
        with beam.Pipeline(runner=pipeline_runner(options.runner, beam_options), options=beam_options) as pipeline:
            build(pipeline)
    except Exception as error:
        if type(error).__name__ != "FutureTimeoutError":  # grpc's: a job service that never answered
            raise
        endpoint = beam_options.get_all_options().get("job_endpoint")
        raise UserError(f"the Beam job service {endpoint} did not answer (runner {options.runner}); start it, or pass "
                        "--job_endpoint=embed to run one in this process") from None
