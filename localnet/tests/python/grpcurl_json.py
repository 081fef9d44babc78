"""What an operator does with grpcurl, in Python: the request is JSON (protobuf's JSON
mapping, as grpcurl -d takes it), the answer is printed as JSON (as grpcurl prints it).

Usage: grpcurl_json.py HOST:PORT STUBS_DIR PK
Calls skywire.discovery.v1.Discovery/GetEntry with {"pk": PK} and prints the answer's JSON,
or `ERROR <code name> <details>` if the call fails.
"""

import sys

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from skywire.discovery.v1 import discovery_pb2, discovery_pb2_grpc  # noqa: E402


def main():
    request = json_format.Parse('{"pk": "%s"}' % sys.argv[3], discovery_pb2.GetEntryRequest())
    with grpc.insecure_channel(sys.argv[1]) as channel:
        try:
            entry = discovery_pb2_grpc.DiscoveryStub(channel).GetEntry(request, timeout=10)
        except grpc.RpcError as error:
            print("ERROR", error.code().name, error.details())
            return
    print(json_format.MessageToJson(entry))


if __name__ == "__main__":
    main()
