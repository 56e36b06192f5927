"""The one way a test runs the connector's CLI: `run_cli` (all the input at once) and `start_cli` (a
running connector whose stdin stays open).

Two modes, and each test says which it needs:

- In this process (`run_cli`'s default): `DestinationPlanhat().run(argv)`, as main.py calls it, with
  stdin, stdout and stderr redirected to buffers for the run. The CDK's log handler is swapped for one
  that writes the same LOG lines to that stdout; the CDK's secret filter, the excepthook it installs
  and the environment are put back afterwards. An exception that would end the process goes to the
  excepthook the run installed (it logs it and prints the TRACE error, as in the process) and gives
  exit code 1, as the interpreter would. No interpreter start and imports per run (about 1.3 s each).
  A config that does not set `parse_workers` runs with 0 here (decoding in the connector's thread):
  starting the worker processes costs about half a second a run, and the tests about them set it.
  Set, they run as usual (processes of their own, with pipes of their own); only their stderr is not
  in `CliRun.stderr`.
- As a process (`process=True`, and always for `start_cli`): `python main.py <command>` with pipes,
  for what only a process shows: exit codes, pipes and framing, the interpreter's and the parse
  workers' stderr. Such tests are marked `process` (`make fast` leaves them out; conftest.py refuses
  a process run in a test without the marker).

Every run's stdout is validated line by line against the Airbyte protocol schema
(`protocol_schema.py`), and refused if stdout or stderr carries the config's `tenant_uuid` or
`api_token` in any form.
"""

from __future__ import annotations

import _thread
import contextlib
import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Optional
from urllib.parse import quote

from airbyte_cdk.logger import AirbyteLogFormatter
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput
from airbyte_cdk.test.standard_tests._spec_lint import assert_no_secrets_in_output
from airbyte_cdk.utils import airbyte_secrets_utils

from destination_planhat.destination import DestinationPlanhat
from destination_planhat.testing.harness import REPO_ROOT
from destination_planhat.testing.protocol_schema import assert_protocol_output

if TYPE_CHECKING:
    from destination_planhat.testing.sandbox import PlanhatSandbox

MAIN = REPO_ROOT / "main.py"
# A bound for a hung connector, never an expectation: a test gives up after this long.
GIVE_UP_SECONDS = 300
STATE_LINE = b'{"type":"STATE"'

# Whether the running test may start the connector as a process: conftest.py sets it from the test's
# `process` marker, so that a process run cannot slip into `make fast`. None: not under pytest.
process_runs_allowed: Optional[bool] = None


@dataclass
class CliRun:
    """What one run of the CLI printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    # With `watch`: for each STATE printed, how many requests the sandbox had logged at that moment,
    # so that sync_checks.check_sync can prove each state came after its records' answers.
    state_checkpoints: Optional[list[Any]] = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    @property
    def logs(self) -> list[str]:
        return [m["log"]["message"] for m in self.of_type("LOG")]

    @property
    def traces(self) -> list[dict[str, Any]]:
        return [m["trace"] for m in self.of_type("TRACE")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [t["error"] for t in self.traces if t.get("type") == "ERROR"]

    @property
    def connection_status(self) -> Optional[dict[str, Any]]:
        statuses = self.of_type("CONNECTION_STATUS")
        return statuses[-1]["connectionStatus"] if statuses else None

    def log_lines(self, containing: str) -> list[str]:
        return [line for line in self.logs if containing in line]


def run_cli(
    command: str,
    tmp_path: Path,
    *,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    stdin: bytes = b"",
    process: bool = False,
    watch: Optional[PlanhatSandbox] = None,
    checkpoint: Optional[Callable[[], Any]] = None,
    extra_env: Optional[Mapping[str, str]] = None,
    timeout: float = GIVE_UP_SECONDS,
) -> CliRun:
    """`main.py <command> --config ... --catalog ...` with `stdin` as its input, in this process or
    (`process=True`) as a process. With `watch`, each STATE is stamped with `watch.requests_logged()`
    at the moment it was printed (`CliRun.state_checkpoints`); with `checkpoint`, with what it returns
    then instead (for objects, e.g. `sandbox.object_counts`)."""
    stamp = checkpoint if checkpoint is not None else (watch.requests_logged if watch is not None else None)
    if not process and config is not None and "parse_workers" not in config:
        config = {**config, "parse_workers": 0}  # see the module's docstring
    args = command_args(command, tmp_path, config, catalog)
    if process:
        _check_process_allowed(command)
        returncode, stdout, stderr, checkpoints = _run_process(args, stdin, stamp, extra_env, timeout)
    else:
        returncode, stdout, stderr, checkpoints = _run_here(args, stdin, stamp, extra_env, timeout)
    return finished_run(command, config, returncode, stdout, stderr, checkpoints)


def command_args(
    command: str, tmp_path: Path, config: Optional[Mapping[str, Any]], catalog: Optional[Mapping[str, Any]]
) -> list[str]:
    """The command's arguments after main.py, with the config and catalog written to files in `tmp_path`."""
    args = [command]
    for flag, content in (("--config", config), ("--catalog", catalog)):
        if content is not None:
            path = tmp_path / f"{flag[2:]}.json"
            path.write_text(json.dumps(content))
            args += [flag, str(path)]
    return args


def finished_run(
    command: str,
    config: Optional[Mapping[str, Any]],
    returncode: int,
    stdout: bytes,
    stderr: bytes,
    checkpoints: Optional[list[Any]] = None,
) -> CliRun:
    """The run parsed, after the checks every run gets: a valid protocol message per stdout line, no secret."""
    text = stdout.decode("utf-8", "replace")
    messages = []
    for line in text.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            messages.append({"type": "_NOT_JSON", "line": line})
    run = CliRun(returncode, text, stderr.decode("utf-8", "replace"), messages, checkpoints)
    assert_protocol_output(run.stdout, source=command)
    assert_no_secrets(run, config or {}, verb=command)
    return run


def _check_process_allowed(command: str) -> None:
    if process_runs_allowed is False:
        raise AssertionError(
            f"`{command}` as a process in a test not marked `process`: mark it @pytest.mark.process if it is about "
            "the process boundary (exit codes, pipes, stderr, parse worker processes), else run it in process"
        )


# ----- in this process -----------------------------------------------------------------------------


class _Output(io.RawIOBase):
    """What the connector writes to stdout or stderr, kept as bytes. For stdout with `watch`, a STATE
    line is stamped with the sandbox's request count the moment it is written."""

    def __init__(self, stamp: Optional[Callable[[], Any]] = None) -> None:
        super().__init__()
        self.data = bytearray()
        self.checkpoints: list[Any] = []
        self._stamp = stamp
        self._lock = threading.Lock()

    @property
    def name(self) -> str:  # TextIOWrapper shows its buffer's name
        return "<the connector's output>"

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        with self._lock:
            at_line_start = not self.data or self.data.endswith(b"\n")
            if self._stamp is not None and at_line_start and data.startswith(STATE_LINE):
                self.checkpoints.append(self._stamp())
            self.data += data
        return len(data)


def _text(sink: _Output, like: Optional[IO[str]]) -> io.TextIOWrapper:
    """A text stream over `sink` with the encoding and error handling of the process's own `like`."""
    errors = getattr(like, "errors", None) or "strict"
    return io.TextIOWrapper(sink, encoding="utf-8", errors=errors, write_through=True)


@contextlib.contextmanager
def _environment(extra_env: Optional[Mapping[str, str]]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in extra_env or {}}
    os.environ.update(extra_env or {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _logs_to(stream: IO[str]) -> Iterator[None]:
    """The root logger's handlers (the CDK's, which prints through a buffer to the real stdout, and
    pytest's) replaced by one writing the CDK's LOG lines to `stream`, at the process's root level."""
    root, airbyte = logging.getLogger(), logging.getLogger("airbyte")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AirbyteLogFormatter())
    saved_handlers, saved_levels = root.handlers[:], (root.level, airbyte.level)
    root.handlers = [handler]
    # The levels of a fresh interpreter: the root's default, and the one the CDK gives "airbyte" on import.
    root.setLevel(logging.WARNING)
    airbyte.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_levels[0])
        airbyte.setLevel(saved_levels[1])


@contextlib.contextmanager
def _watchdog(timeout: float, args: list[str]) -> Iterator[None]:
    """Interrupt the run (on the main thread) if it takes longer than `timeout`: a hung connector fails
    its test instead of hanging the suite."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(timeout, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except KeyboardInterrupt:
        if fired.is_set():
            raise AssertionError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from None
        raise
    finally:
        timer.cancel()


def _run_here(
    args: list[str],
    stdin: bytes,
    stamp: Optional[Callable[[], Any]],
    extra_env: Optional[Mapping[str, str]],
    timeout: float,
) -> tuple[int, bytes, bytes, Optional[list[Any]]]:
    out, err = _Output(stamp), _Output()
    stdout, stderr = _text(out, sys.__stdout__), _text(err, sys.__stderr__)
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_hook = sys.excepthook
    airbyte_secrets_utils.update_secrets([])  # a fresh process knows no secret until the run registers them
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = stdout, stderr
    try:
        with _environment(extra_env), _logs_to(stdout), _watchdog(timeout, args):
            returncode = _exit_code_of(args)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.excepthook = saved_hook
        airbyte_secrets_utils.update_secrets([])
    return returncode, bytes(out.data), bytes(err.data), out.checkpoints if stamp is not None else None


def _exit_code_of(args: list[str]) -> int:
    """Run main.py's `run()` on `args`; the exit code the process would have ended with."""
    try:
        DestinationPlanhat().run(args)
    except SystemExit as exc:  # argparse's usage errors, or a sys.exit()
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception as exc:
        # What the interpreter does with an uncaught exception: the excepthook (the CDK's, installed by
        # run(): it logs the error and prints it as a TRACE message), then exit status 1.
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    sys.stdout.flush()
    return 0


# ----- as a process --------------------------------------------------------------------------------


def _popen(args: list[str], extra_env: Optional[Mapping[str, str]]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )


def _pipes(process: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes], IO[bytes]]:
    if process.stdin is None or process.stdout is None or process.stderr is None:
        process.kill()
        process.wait()
        raise RuntimeError("the connector's process has no pipe for stdin, stdout or stderr (Popen needs PIPE)")
    return process.stdin, process.stdout, process.stderr


def _run_process(
    args: list[str],
    stdin: bytes,
    stamp: Optional[Callable[[], Any]],
    extra_env: Optional[Mapping[str, str]],
    timeout: float,
) -> tuple[int, bytes, bytes, Optional[list[Any]]]:
    """stdin fed and stderr drained by threads while stdout is read here, line by line, so that each
    STATE can be stamped the moment it appears."""
    process = _popen(args, extra_env)
    to_connector, from_connector, connector_log = _pipes(process)
    stderr_chunks: list[bytes] = []

    def feed() -> None:
        try:
            to_connector.write(stdin)
        except BrokenPipeError:  # the connector stopped reading (it failed): fine
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                to_connector.close()

    threads = [
        threading.Thread(target=feed, daemon=True),
        threading.Thread(target=lambda: stderr_chunks.append(connector_log.read()), daemon=True),
    ]
    for thread in threads:
        thread.start()
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    lines: list[bytes] = []
    checkpoints: list[Any] = []
    try:
        for line in from_connector:
            if stamp is not None and line.startswith(STATE_LINE):
                checkpoints.append(stamp())
            lines.append(line)
        returncode = process.wait()
    finally:
        watchdog.cancel()
    for thread in threads:
        thread.join(timeout=GIVE_UP_SECONDS)
    assert returncode != -9, f"`{' '.join(args)}` did not finish within {timeout:g} s"
    return returncode, b"".join(lines), b"".join(stderr_chunks), checkpoints if stamp is not None else None


class LiveCli:
    """A connector running as a process whose stdin stays open until the test ends it: for what
    happens while a source is quiet. Its stdout lines are handed over by a thread, so that a test can
    wait for the next state; its stderr is drained so that the process never blocks on it."""

    def __init__(self, command: str, config: Optional[Mapping[str, Any]], process: subprocess.Popen[bytes]) -> None:
        self.command = command
        self.config = config
        self.process = process
        self._input, output, errors = _pipes(process)
        self.seen: list[dict[str, Any]] = []  # the messages read so far
        self._lines: list[bytes] = []
        self._stderr: list[bytes] = []
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue()
        threading.Thread(target=self._pump, args=(output,), daemon=True).start()
        self._drain = threading.Thread(target=lambda: self._stderr.append(errors.read()), daemon=True)
        self._drain.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, data: bytes) -> None:
        """Write to the connector's stdin and flush, leaving it open."""
        self._input.write(data)
        self._input.flush()

    def end_input(self) -> None:
        self._input.close()

    def running(self) -> bool:
        return self.process.poll() is None

    def _next_line(self) -> Optional[bytes]:
        line = self._queue.get(timeout=GIVE_UP_SECONDS)
        if line is not None:
            self._lines.append(line)
            self.seen.append(json.loads(line))
        return line

    def next_state(self) -> dict[str, Any]:
        """The `state` of the next STATE message (the messages before it are kept in `seen`)."""
        while True:
            line = self._next_line()
            assert line is not None, "the connector ended its output without emitting the state"
            message = self.seen[-1]
            if message.get("type") == "STATE":
                return message["state"]

    def finish(self) -> CliRun:
        """End the input, wait for the connector to exit, and the whole run, checked as `run_cli` checks it."""
        with contextlib.suppress(BrokenPipeError):
            self._input.close()
        while self._next_line() is not None:
            pass
        returncode = self.process.wait(timeout=GIVE_UP_SECONDS)
        self._drain.join(timeout=GIVE_UP_SECONDS)
        return finished_run(self.command, self.config, returncode, b"".join(self._lines), b"".join(self._stderr))

    def kill(self) -> None:
        if self.running():
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> LiveCli:
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        self.kill()


def start_cli(
    command: str,
    tmp_path: Path,
    *,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    extra_env: Optional[Mapping[str, str]] = None,
) -> LiveCli:
    """`main.py <command>` started as a process with its stdin a pipe the test writes to (and may leave
    open). Use it as a context manager: the process is killed if the test leaves it running."""
    _check_process_allowed(command)
    return LiveCli(command, config, _popen(command_args(command, tmp_path, config, catalog), extra_env))


# ----- secrets ---------------------------------------------------------------------------------


def secret_forms(value: str) -> set[str]:
    """A secret as it may show up: as is, trimmed, each of its lines, JSON- and repr-escaped, URL-encoded."""
    texts = {value, value.strip(), *(line.strip() for line in value.splitlines() if len(line.strip()) >= 6)}
    forms = set()
    for text in texts:
        if text:
            forms |= {text, json.dumps(text)[1:-1], repr(text)[1:-1], quote(text, safe="")}
    return forms


def assert_no_secrets(run: CliRun, config: Mapping[str, Any], *, verb: str) -> None:
    """Our own check (every secret, any length, raw stdout and stderr), then the CDK's."""
    for name in ("tenant_uuid", "api_token"):
        value = config.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            continue
        for form in secret_forms(value):
            for where, text in (("stdout", run.stdout), ("stderr", run.stderr)):
                # The message names the place, never the text: it must not print the secret itself.
                assert form not in text, f"`{verb}` printed `{name}` on {where} (line {_line_of(text, form)})"
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if lines and config:
        output = EntrypointOutput(messages=lines, stderr=run.stderr)
        spec = DestinationPlanhat().spec(logging.getLogger("airbyte"))
        assert_no_secrets_in_output(output, spec=spec, config=config, verb=verb, connector_name="destination-planhat")


def _line_of(text: str, form: str) -> int:
    return text[: text.index(form)].count("\n") + 1


def state_positions(run: CliRun) -> list[int]:
    """Indexes of STATE messages among all stdout messages, for ordering assertions."""
    return [i for i, m in enumerate(run.messages) if m.get("type") == "STATE"]
