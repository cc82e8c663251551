"""A real single-node Apache Kafka broker (KRaft) on loopback, from Apache Kafka's own jars.

Consumes Maven Central (once, through `mvn`, into a user cache) and Java 17. Produces a running
broker+controller process on a free loopback port (or a chosen one), its bootstrap address, and a
clean stop. Used by `dastra-kafka broker`, the tests' session broker and the demo. Also fetches
Kafka's command-line tools (`kafka-tools`: the console producer and consumer) beside the broker's
jars, for the tests that play a client the project does not use itself.

    with LocalKafka() as broker:
        print(broker.bootstrap_servers)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "LocalKafkaError",
    "LocalKafkaInterruptedError",
    "LocalKafkaPortInUseError",
    "OAuthBearerListener",
    "cache_dir",
    "ensure_jars",
    "ensure_tools_jars",
    "free_port",
    "tools_classpath",
    "use_port_range",
]

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# Kafka 4.x ships log4j-core and slf4j-api 1.7 but no binding between them: without this one,
# the broker's own log lines are lost.
_LOG4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.5")
_MAVEN_ATTEMPTS = 3

Progress = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """The local broker could not be prepared or started; the message says what to do."""


class LocalKafkaPortInUseError(LocalKafkaError):
    """The port asked for is already taken (bad input, not an outage)."""


class LocalKafkaInterruptedError(LocalKafkaError):
    """Ctrl-C, SIGTERM or the caller's stop event ended the download or the start-up."""


# How a child ends when Ctrl-C (same process group) or SIGTERM reached it: killed by the signal,
# or exiting with 128 + the signal number as the JVM and shells do.
_INTERRUPTED_CODES = frozenset(
    {-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM}
)


def cache_dir() -> Path:
    """Where Kafka's jars are kept between runs (`DASTRA_KAFKA_CACHE` overrides)."""
    explicit = os.environ.get("DASTRA_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dastra-kafka"


class _PortRange:
    """Where `free_port` looks: the kernel's ephemeral ports by default, or a range of this
    process's own (`use_port_range`) walked with a cursor, so a port handed out and not yet bound
    is never handed out again, and processes given disjoint ranges never pick the same one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._range: range | None = None
        self._next = 0

    def use(self, first: int, last: int) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"port range {first}-{last}: give 1024 <= first <= last <= 65535")
        with self._lock:
            self._range = range(first, last + 1)
            self._next = 0

    def pick(self, host: str) -> int:
        with self._lock:
            ports = self._range
            if ports is None:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, 0))
                    return int(sock.getsockname()[1])
            for _ in range(len(ports)):
                port = ports[self._next % len(ports)]
                self._next += 1
                if not _port_in_use(port, host, reuse=False):
                    return port
        raise LocalKafkaError(f"no free port left in {ports.start}-{ports.stop - 1} on {host}")


_ports = _PortRange()


def use_port_range(first: int, last: int) -> None:
    """Make `free_port` hand out ports from first..last only (inclusive), in turn. A test runner
    with parallel workers gives each its own range, below the kernel's ephemeral ports, so two
    workers (or a client's outgoing connection) never take the port one of them just picked."""
    _ports.use(first, last)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (see `use_port_range`)."""
    return _ports.pick(host)


def _port_in_use(port: int, host: str = "127.0.0.1", *, reuse: bool = True) -> bool:
    """Whether binding `port` fails; `reuse=False` also counts a port still in TIME_WAIT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalKafkaError(f"{tool!r} was not found on PATH: {why}")
    return path


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eu.dastra.kafka</groupId>
  <artifactId>local-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>{bgroup}</groupId>
      <artifactId>{bartifact}</artifactId>
      <version>{bversion}</version>
    </dependency>
  </dependencies>
</project>
"""


# The tools jar alone: everything it needs at run time is among the broker's jars.
_TOOLS_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eu.dastra.kafka</groupId>
  <artifactId>local-tools</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
      <exclusions>
        <exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""


@dataclass(frozen=True)
class _JarSet:
    """One Maven download kept in the cache: its directory, the jar it must hold, its POM."""

    version: str
    dirname: str
    main_jar: str
    pom: str
    what: str


def _broker_jars(version: str) -> _JarSet:
    return _JarSet(
        version=version,
        dirname=f"kafka_{SCALA_VERSION}-{version}",
        main_jar=f"kafka_{SCALA_VERSION}-{version}.jar",
        pom=_POM.format(
            scala=SCALA_VERSION,
            kafka=version,
            bgroup=_LOG4J_BINDING[0],
            bartifact=_LOG4J_BINDING[1],
            bversion=_LOG4J_BINDING[2],
        ),
        what=f"Apache Kafka {version}",
    )


def _tools_jars(version: str) -> _JarSet:
    return _JarSet(
        version=version,
        dirname=f"kafka-tools-{version}",
        main_jar=f"kafka-tools-{version}.jar",
        pom=_TOOLS_POM.format(kafka=version),
        what=f"Apache Kafka {version}'s command-line tools",
    )


def _verified(target: Path, main_jar: str) -> bool:
    """True when `target` holds a complete download (every jar of its manifest, same size)."""
    manifest = target / "COMPLETE.json"
    try:
        listed: dict[str, int] = json.loads(manifest.read_text())["jars"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if main_jar not in listed:
        return False
    for name, size in listed.items():
        jar = target / "libs" / name
        if not jar.is_file() or jar.stat().st_size != size:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(
    command: list[str], stop: threading.Event | None, timeout_s: float
) -> tuple[int, str]:
    """Run Maven to its end (return code, output), or stop it when `stop` is set."""
    deadline = time.monotonic() + timeout_s
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            while True:
                try:
                    output, _ = process.communicate(timeout=0.25)
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        raise LocalKafkaInterruptedError(
                            "stopped while fetching Kafka's jars; nothing was kept"
                        ) from None
                    if time.monotonic() > deadline:
                        raise
                    continue
                return process.returncode, output
        finally:
            if process.poll() is None:  # stopped, timed out or KeyboardInterrupt
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def ensure_jars(
    cache: Path | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    version: str = KAFKA_VERSION,
) -> Path:
    """Return the directory of Kafka's jars (of `version`, default the pinned one), downloading
    them with Maven if needed.

    A download lands in a temporary directory and is published only after Maven succeeded and
    every jar was listed in a manifest; an interrupted or failed download is never used. A Maven
    run ended by Ctrl-C or SIGTERM, or a set `stop` event, raises `LocalKafkaInterruptedError`
    instead of retrying.

        libs = ensure_jars()
    """
    return _ensure(_broker_jars(version), cache, progress, stop)


def ensure_tools_jars(
    cache: Path | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    version: str = KAFKA_VERSION,
) -> Path:
    """Return the directory holding Kafka's command-line tools jar (`kafka-tools`), downloading
    it with Maven if needed as `ensure_jars` does; it runs on the broker's jars
    (`tools_classpath`).

        libs = ensure_tools_jars()
    """
    return _ensure(_tools_jars(version), cache, progress, stop)


def tools_classpath(
    cache: Path | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    version: str = KAFKA_VERSION,
) -> str:
    """The Java class path of Kafka's tools (the broker's jars and the tools jar, fetched if
    needed), as one argument: Java expands the wildcards.

        java = ["java", "-cp", tools_classpath(), "org.apache.kafka.tools.ConsoleProducer"]
    """
    broker = ensure_jars(cache, progress, stop, version)
    tools = ensure_tools_jars(cache, progress, stop, version)
    return f"{broker}/*{os.pathsep}{tools}/*"


def _ensure(
    jars: _JarSet,
    cache: Path | None,
    progress: Progress | None,
    stop: threading.Event | None,
) -> Path:
    cache = cache or cache_dir()
    target = cache / jars.dirname
    say = progress or (lambda _msg: None)
    with _locked(cache / ".lock"):
        if _verified(target, jars.main_jar):
            return target / "libs"
        _require("java", "install Java 17 or newer (Debian: apt-get install openjdk-17-jre)")
        mvn = _require(
            "mvn", "Maven fetches Kafka's jars the first time (Debian: apt-get install maven)"
        )
        say(f"fetching {jars.what} jars from Maven Central into {target}")
        last_error = ""
        for attempt in range(1, _MAVEN_ATTEMPTS + 1):
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
            try:
                (staging / "pom.xml").write_text(jars.pom)
                returncode, output = _run_maven(
                    [
                        mvn,
                        "-q",
                        "-B",
                        "-f",
                        str(staging / "pom.xml"),
                        "dependency:copy-dependencies",
                        f"-DoutputDirectory={staging / 'libs'}",
                        "-DincludeScope=runtime",
                    ],
                    stop,
                    timeout_s=900,
                )
                if returncode in _INTERRUPTED_CODES or (stop is not None and stop.is_set()):
                    raise LocalKafkaInterruptedError(
                        f"Maven was interrupted (exit {returncode}) while fetching Kafka's "
                        "jars; nothing was kept"
                    )
                if returncode == 0:
                    found = {p.name: p.stat().st_size for p in (staging / "libs").glob("*.jar")}
                    (staging / "COMPLETE.json").write_text(
                        json.dumps({"kafka": jars.version, "jars": found}, indent=1)
                    )
                    if _verified(staging, jars.main_jar):
                        shutil.rmtree(target, ignore_errors=True)
                        staging.rename(target)
                        say(f"{len(found)} jars ready")
                        return target / "libs"
                    last_error = f"Maven finished but {jars.main_jar} is missing from its output"
                else:
                    last_error = output.strip()[-2000:]
            except subprocess.TimeoutExpired:
                last_error = "Maven did not finish within 15 minutes"
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            say(f"download attempt {attempt} failed; retrying")
        raise LocalKafkaError(
            f"could not fetch {jars.what} from Maven Central after "
            f"{_MAVEN_ATTEMPTS} attempts:\n{last_error}"
        )


_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


@dataclass(frozen=True)
class OAuthBearerListener:
    """A SASL_PLAINTEXT client listener that accepts OAUTHBEARER tokens: RS256 JWTs signed by
    a key of `jwks_url`, with this audience and issuer. The broker may fetch only `jwks_url`
    and `token_url` (Kafka 4's allowed-URLs list). Controller and inter-broker traffic stay on
    a PLAINTEXT listener named INTERNAL, on loopback."""

    jwks_url: str
    token_url: str
    audience: str
    issuer: str


def _server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    sasl_users: dict[str, str] | None,
    oauth: OAuthBearerListener | None = None,
    internal_port: int | None = None,
) -> str:
    protocol = "SASL_PLAINTEXT" if sasl_users or oauth else "PLAINTEXT"
    if oauth is not None:
        listeners = (
            f"SASL_PLAINTEXT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}"
        )
        advertised = f"SASL_PLAINTEXT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port}"
        inter_broker = "INTERNAL"
        protocol_map = "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    else:
        listeners = f"{protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        advertised = f"{protocol}://127.0.0.1:{port}"
        inter_broker = protocol
        protocol_map = f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}"
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={inter_broker}",
        f"listener.security.protocol.map={protocol_map}",
        f"log.dirs={log_dir}",
        # One node: every internal topic has one replica, so transactions and groups work.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=5",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics come from topics.yaml, never from a typo in a client.
        "auto.create.topics.enable=false",
        "num.partitions=1",
        # A 2-core machine: few threads.
        "num.network.threads=2",
        "num.io.threads=2",
        "background.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "log.cleaner.threads=1",
        "log.cleaner.backoff.ms=2000",
    ]
    if sasl_users:
        users = " ".join(f'user_{name}="{secret}"' for name, secret in sasl_users.items())
        admin_name, admin_secret = next(iter(sasl_users.items()))
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{admin_name}" password="{admin_secret}" {users};',
        ]
    if oauth is not None:
        prefix = "listener.name.sasl_plaintext.oauthbearer."
        lines += [
            "sasl.enabled.mechanisms=OAUTHBEARER",
            f"{prefix}sasl.jaas.config="
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required ;",
            f"{prefix}sasl.server.callback.handler.class="
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
            f"sasl.oauthbearer.jwks.endpoint.url={oauth.jwks_url}",
            f"sasl.oauthbearer.expected.audience={oauth.audience}",
            f"sasl.oauthbearer.expected.issuer={oauth.issuer}",
        ]
    return "\n".join(lines) + "\n"


def _authorizer_properties(sasl_users: dict[str, str] | None) -> str:
    if not sasl_users:
        raise LocalKafkaError("authorizer=True needs sasl_users: ACLs name SASL principals")
    admin = next(iter(sasl_users))
    return (
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
        "allow.everyone.if.no.acl.found=false\n"
        f"super.users=User:{admin};User:ANONYMOUS\n"
    )


@dataclass
class LocalKafka:
    """A single-node KRaft broker+controller on loopback, owned by this object.

    `port=None` picks a free port; `data_dir=None` uses a temporary directory removed on stop,
    a given `data_dir` keeps topics and data across restarts.

        with LocalKafka(data_dir=Path("/tmp/kafka")) as broker:
            use(broker.bootstrap_servers)
    """

    port: int | None = None
    data_dir: Path | None = None
    heap: str = "512m"
    # HotSpot's quick JIT only (-XX:TieredStopAtLevel=1): a start costs about 40 % less CPU
    # (5 s instead of 8.5 s, measured on 2 cores), for a broker that lives a minute (the tests'
    # dedicated ones). A long-lived broker keeps the full JIT's steady throughput.
    quick_jit: bool = False
    startup_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0
    sasl_users: dict[str, str] | None = None
    oauth: OAuthBearerListener | None = None
    # Kafka's StandardAuthorizer with no access unless an ACL allows it. Needs `sasl_users`:
    # their first user (the inter-broker one) and the controller's ANONYMOUS are super users.
    authorizer: bool = False
    progress: Progress | None = None
    # Any Kafka release on Maven Central with KRaft's static quorum (3.3 and later); older
    # clusters than the pinned one prove the project works where customers still run them.
    version: str = KAFKA_VERSION
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _owns_workdir: bool = field(default=False, init=False, repr=False)
    _port: int | None = field(default=None, init=False, repr=False)
    _internal_port: int | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None or self._process is None:
            raise LocalKafkaError("the broker is not running: call start() or use `with`")
        return f"127.0.0.1:{self._port}"

    @property
    def log_file(self) -> Path | None:
        return self._workdir / "broker.log" if self._workdir else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, stop: threading.Event | None = None) -> str:
        """Start the broker and return its bootstrap address once it answers metadata.

        Setting `stop` (a signal handler does) before the broker is ready ends the download or
        the start-up: the broker is stopped and `LocalKafkaInterruptedError` raised.
        """
        if self._process is not None:
            raise LocalKafkaError("the broker is already running")
        java = _require("java", "install Java 17 or newer (Debian: apt-get install openjdk-17-jre)")
        libs = ensure_jars(progress=self.progress, stop=stop, version=self.version)
        if stop is not None and stop.is_set():
            raise LocalKafkaInterruptedError("stopped before the broker was started")
        if self.data_dir is not None:
            self._workdir = self.data_dir.resolve()
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._owns_workdir = False
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="dastra-kafka-broker-"))
            self._owns_workdir = True
        try:
            if self.oauth is not None and self.sasl_users:
                raise LocalKafkaError("choose sasl_users (PLAIN) or oauth (OAUTHBEARER), not both")
            port, controller_port = self._choose_ports(self._workdir)
            if self.oauth is not None:
                self._internal_port = free_port()
                while self._internal_port in (port, controller_port):
                    self._internal_port = free_port()
            log_dir = self._workdir / "kraft-logs"
            props = self._workdir / "server.properties"
            props.write_text(
                _server_properties(
                    port=port,
                    controller_port=controller_port,
                    log_dir=log_dir,
                    sasl_users=self.sasl_users,
                    oauth=self.oauth,
                    internal_port=self._internal_port,
                )
            )
            if self.authorizer:
                with props.open("a") as handle:
                    handle.write(_authorizer_properties(self.sasl_users))
            log4j = self._workdir / "log4j2.yaml"
            log4j.write_text(_LOG4J2)
            base = [
                java,
                "-Xms128m",
                f"-Xmx{self.heap}",
                "-XX:+UseSerialGC",
                *(["-XX:TieredStopAtLevel=1"] if self.quick_jit else []),
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}",
                *(
                    [
                        "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="
                        f"{self.oauth.jwks_url},{self.oauth.token_url}"
                    ]
                    if self.oauth is not None
                    else []
                ),
                "-cp",
                f"{libs}/*",  # one argument: Java expands the wildcard, not the shell
            ]
            if not (log_dir / "meta.properties").is_file():
                self._format(base, props, log_dir)
            log = (self._workdir / "broker.log").open("ab")
            try:
                self._process = subprocess.Popen(
                    [*base, "kafka.Kafka", str(props)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches us; we stop the broker cleanly
                )
            finally:
                log.close()
            self._port = port
            self._wait_ready(stop)
        except LocalKafkaError as exc:
            self.stop()
            if (
                stop is not None
                and stop.is_set()
                and not isinstance(exc, LocalKafkaInterruptedError)
            ):
                # e.g. the storage formatter killed by the same Ctrl-C
                raise LocalKafkaInterruptedError("stopped before the broker was ready") from exc
            raise
        except BaseException:
            self.stop()
            raise
        return self.bootstrap_servers

    def _choose_ports(self, workdir: Path) -> tuple[int, int]:
        remembered = workdir / "ports.json"
        previous: dict[str, int] = {}
        if remembered.is_file():
            with contextlib.suppress(ValueError, OSError):
                previous = json.loads(remembered.read_text())
        if self.port is not None:
            if _port_in_use(self.port):
                raise LocalKafkaPortInUseError(
                    f"port {self.port} on 127.0.0.1 is already in use: stop what listens there, "
                    "or leave out --port to pick a free one"
                )
            port = self.port
        else:
            port = previous.get("port", 0)
            if not port or _port_in_use(port):
                port = free_port()
        # The controller port is part of the KRaft quorum configuration: keep it across restarts
        # of the same data directory when possible.
        controller_port = previous.get("controller_port", 0)
        if not controller_port or controller_port == port or _port_in_use(controller_port):
            controller_port = free_port()
            while controller_port == port:
                controller_port = free_port()
        remembered.write_text(json.dumps({"port": port, "controller_port": controller_port}))
        return port, controller_port

    def _format(self, base: list[str], props: Path, log_dir: Path) -> None:
        cluster_id = uuid.uuid4()
        # KRaft cluster ids are 16 bytes in URL-safe base64 without padding.
        cid = base64.urlsafe_b64encode(cluster_id.bytes).decode().rstrip("=")
        result = subprocess.run(
            # `--cluster-id=...`: a random id may start with "-", which a separate argument
            # would turn into an option.
            [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={cid}", "-c", str(props)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 or not (log_dir / "meta.properties").is_file():
            raise LocalKafkaError(
                "formatting the KRaft log directory failed:\n"
                + (result.stdout + result.stderr).strip()[-2000:]
            )

    def _wait_ready(self, stop: threading.Event | None = None) -> None:
        from confluent_kafka.admin import AdminClient

        assert self._process is not None and self._port is not None

        def _check_stop() -> None:
            if stop is not None and stop.is_set():
                raise LocalKafkaInterruptedError("stopped before the broker was ready")

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            _check_stop()
            if self._process.poll() is not None:
                raise LocalKafkaError(
                    f"the broker exited with code {self._process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self._port)) == 0:
                    break
            time.sleep(0.1)
        conf: dict[str, str | int | float | bool] = {"bootstrap.servers": f"127.0.0.1:{self._port}"}
        if self._internal_port is not None:
            # OAUTHBEARER clients need a token issuer; readiness is checked on the internal
            # PLAINTEXT listener, which shares the broker's fate.
            conf["bootstrap.servers"] = f"127.0.0.1:{self._internal_port}"
        elif self.sasl_users:
            name, secret = next(iter(self.sasl_users.items()))
            conf.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": "PLAIN",
                    "sasl.username": name,
                    "sasl.password": secret,
                }
            )
        admin = AdminClient(conf)
        while time.monotonic() < deadline:
            _check_stop()
            if self._process.poll() is not None:
                raise LocalKafkaError(
                    f"the broker exited with code {self._process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    return
            except Exception:  # noqa: S112 - KafkaException until the broker answers
                continue
        raise LocalKafkaError(
            f"the broker did not answer within {self.startup_timeout_s:.0f} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        log = self.log_file
        if log is None or not log.is_file():
            return "(no broker log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after `stop_timeout_s`. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=10)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._port = None
        self._internal_port = None
