"""An independent dmsg-discovery client: Python, grpcio, and the signing bytes of
dmsg/PROTOCOL.md §14.1 written out here from the specification (not generated from Rust).

Usage: client.py HOST:PORT STUBS_DIR
Puts a signed client entry, reads it back, checks a forged one is refused, replays it and
decodes the refusal's standard details (google.rpc.Status holding a google.rpc.ErrorInfo, as
any gRPC tool would), sends it padded with an unknown field, and prints
"ERRORINFO <reason> <domain> stored_sequence=<n>", "PADDED <code> <reason>" and
"OK <owner hex>".
"""

import struct
import sys
import time

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from google.rpc import error_details_pb2, status_pb2  # noqa: E402

from skywire.discovery.v1 import discovery_pb2, discovery_pb2_grpc  # noqa: E402


def error_info(error):
    """The google.rpc.ErrorInfo in an RpcError's grpc-status-details-bin trailer."""
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details, f"no grpc-status-details-bin in {error}"
    status = status_pb2.Status.FromString(details)
    assert status.code == error.code().value[0], (status.code, error.code())
    assert status.message == error.details(), (status.message, error.details())
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), status.details
    return info


def signing_bytes(entry):
    """PROTOCOL.md §14.1, field by field."""
    out = bytearray(b"skywire-discovery/1 entry")
    out += bytes.fromhex(entry.owner)
    out += struct.pack(">Q", entry.sequence)
    out += struct.pack(">q", entry.timestamp_unix_nanos)
    version = entry.version.encode()
    out += struct.pack(">B", len(version)) + version
    has_client = entry.HasField("client")
    has_server = entry.HasField("server")
    out += struct.pack(">B", int(has_client) | int(has_server) << 1 | int(entry.pq_capable) << 2)
    if has_client:
        out += struct.pack(">H", len(entry.client.delegated_servers))
        for server in entry.client.delegated_servers:
            out += bytes.fromhex(server)
    if has_server:
        address = entry.server.address.encode()
        out += struct.pack(">H", len(address)) + address
        out += struct.pack(">q", entry.server.available_sessions)
        kind = entry.server.server_type.encode()
        out += struct.pack(">B", len(kind)) + kind
        out += struct.pack(">q", entry.server.max_sessions)
    return bytes(out)


def main():
    key = Ed25519PrivateKey.generate()
    owner = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    delegated = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    entry = discovery_pb2.Entry(
        owner=owner.hex(),
        sequence=1,
        timestamp_unix_nanos=time.time_ns(),
        version="python-0.1",
        client=discovery_pb2.ClientPart(delegated_servers=[delegated.hex()]),
        pq_capable=False,
    )
    entry.signature = key.sign(signing_bytes(entry))

    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = discovery_pb2_grpc.DiscoveryStub(channel)
        created = stub.PutEntry(discovery_pb2.PutEntryRequest(entry=entry), timeout=10).created
        assert created, "the entry is new"
        back = stub.GetEntry(discovery_pb2.GetEntryRequest(pk=owner.hex()), timeout=10)
        assert back == entry, f"read back differs:\n{back}\nvs\n{entry}"

        forged = discovery_pb2.Entry()
        forged.CopyFrom(entry)
        forged.sequence = 2
        try:
            stub.PutEntry(discovery_pb2.PutEntryRequest(entry=forged), timeout=10)
            raise AssertionError("a forged update was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.code()

        # The same entry again: a stale sequence, with what is stored in the details.
        try:
            stub.PutEntry(discovery_pb2.PutEntryRequest(entry=entry), timeout=10)
            raise AssertionError("a replayed entry was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.code()
            info = error_info(error)
            print("ERRORINFO", info.reason, info.domain, f"stored_sequence={info.metadata['stored_sequence']}")

        # A newer entry padded with 6,000 bytes of a field discovery does not know.
        padded = discovery_pb2.Entry()
        padded.CopyFrom(entry)
        padded.sequence = 3
        padded.signature = key.sign(signing_bytes(padded))
        unknown = bytes([0x9A, 0x06]) + bytes([0xF0, 0x2E]) + b"x" * 6000  # field 99, 6000 bytes
        padded = discovery_pb2.Entry.FromString(padded.SerializeToString() + unknown)
        try:
            stub.PutEntry(discovery_pb2.PutEntryRequest(entry=padded), timeout=10)
            raise AssertionError("a padded entry was accepted")
        except grpc.RpcError as error:
            print("PADDED", error.code().name, error_info(error).reason)

    print("OK", owner.hex())


if __name__ == "__main__":
    main()
