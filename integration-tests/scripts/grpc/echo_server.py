"""Tiny grpcio server for golden captures: unary Say (NOT_FOUND for text
"missing"), server-streaming Count. Usage: echo_server.py ADDR GENDIR"""
import sys
from concurrent import futures

sys.path.insert(0, sys.argv[2])
import grpc  # noqa: E402
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402


class Echo(echo_pb2_grpc.EchoServicer):
    def Say(self, request, context):
        if request.text == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such text: missing")
        return echo_pb2.SayReply(text="echo " + request.text)

    def Count(self, request, context):
        for i in range(request.n):
            yield echo_pb2.SayReply(text=str(i))


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
server.add_insecure_port(sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination(timeout=60)
