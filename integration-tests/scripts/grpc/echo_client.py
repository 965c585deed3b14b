"""Client for echo_server.py: one unary call, one server stream of 3, one
NOT_FOUND error, all on one channel. Usage: echo_client.py ADDR GENDIR"""
import sys

sys.path.insert(0, sys.argv[2])
import grpc  # noqa: E402
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402

with grpc.insecure_channel(sys.argv[1]) as ch:
    stub = echo_pb2_grpc.EchoStub(ch)
    print(stub.Say(echo_pb2.SayRequest(text="hello"), timeout=5).text)
    print([r.text for r in stub.Count(echo_pb2.CountRequest(n=3), timeout=5)])
    try:
        stub.Say(echo_pb2.SayRequest(text="missing"), timeout=5)
    except grpc.RpcError as e:
        print("error", e.code(), e.details())
