# HTTP/1.1 request sent in two segments with a pause between them: a capture
# started during the pause sees a request whose first segment is headers.
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080))
s.sendall(sys.argv[2].encode() + b"\r\n")
time.sleep(4)
s.sendall(b"Host: x\r\nAccept: */*\r\nConnection: close\r\n\r\n")
while s.recv(65536):
    pass
s.close()
