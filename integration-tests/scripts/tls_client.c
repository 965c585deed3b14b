/* A minimal HTTPS client for the TLS uprobe tests (tls_uprobes.rs).
 *
 * Built with OpenSSL linked statically (libssl.a + libcrypto.a), it stands
 * for the programs that carry their TLS library inside the executable.
 * Built with -DTLS_DLOPEN, it takes the library from $TLS_LIB at run time
 * (any file name, OpenSSL or BoringSSL: both have these functions with the
 * same signatures), so no headers of the library are needed.
 *
 * usage: tls_client HOST PORT DELAY_MS PATH...
 * Sleeps DELAY_MS (the agent attaches to a new executable a few ms after its
 * exec), then per PATH opens one TLS connection, sends
 * `GET PATH HTTP/1.1` with `Connection: close`, reads to the end and prints
 * `PATH STATUS TLS_VERSION`: the test's oracle.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

#ifdef TLS_DLOPEN
#include <dlfcn.h>
static const SSL_METHOD *(*TLS_client_method)(void);
static SSL_CTX *(*SSL_CTX_new)(const SSL_METHOD *);
static SSL *(*SSL_new)(SSL_CTX *);
static int (*SSL_set_fd)(SSL *, int);
static int (*SSL_connect)(SSL *);
static int (*SSL_write)(SSL *, const void *, int);
static int (*SSL_read)(SSL *, void *, int);
static const char *(*SSL_get_version)(const SSL *);
static int (*SSL_shutdown)(SSL *);
static void (*SSL_free)(SSL *);

static void *need(void *lib, const char *name) {
    void *f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "%s: %s\n", name, dlerror());
        exit(2);
    }
    return f;
}

static void load(void) {
    const char *path = getenv("TLS_LIB");
    void *lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", path ? path : "(TLS_LIB unset)", dlerror());
        exit(2);
    }
    *(void **)&TLS_client_method = need(lib, "TLS_client_method");
    *(void **)&SSL_CTX_new = need(lib, "SSL_CTX_new");
    *(void **)&SSL_new = need(lib, "SSL_new");
    *(void **)&SSL_set_fd = need(lib, "SSL_set_fd");
    *(void **)&SSL_connect = need(lib, "SSL_connect");
    *(void **)&SSL_write = need(lib, "SSL_write");
    *(void **)&SSL_read = need(lib, "SSL_read");
    *(void **)&SSL_get_version = need(lib, "SSL_get_version");
    *(void **)&SSL_shutdown = need(lib, "SSL_shutdown");
    *(void **)&SSL_free = need(lib, "SSL_free");
}
#else
const SSL_METHOD *TLS_client_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
SSL *SSL_new(SSL_CTX *);
int SSL_set_fd(SSL *, int);
int SSL_connect(SSL *);
int SSL_write(SSL *, const void *, int);
int SSL_read(SSL *, void *, int);
const char *SSL_get_version(const SSL *);
int SSL_shutdown(SSL *);
void SSL_free(SSL *);
static void load(void) {}
#endif

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT DELAY_MS PATH...\n", argv[0]);
        return 2;
    }
    load();
    struct timespec d = {atoi(argv[3]) / 1000, (atoi(argv[3]) % 1000) * 1000000L};
    nanosleep(&d, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        fprintf(stderr, "SSL_CTX_new failed\n");
        return 1;
    }
    for (int i = 4; i < argc; i++) {
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(atoi(argv[2]));
        if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
            fprintf(stderr, "bad address %s\n", argv[1]);
            return 2;
        }
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("connect");
            return 1;
        }
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) {
            fprintf(stderr, "SSL_connect failed\n");
            return 1;
        }
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls-client\r\nConnection: close\r\n\r\n",
                         argv[i], argv[1]);
        if (SSL_write(ssl, req, n) != n) {
            fprintf(stderr, "SSL_write failed\n");
            return 1;
        }
        char head[64] = {0};
        size_t have = 0;
        char buf[4096];
        int r;
        while ((r = SSL_read(ssl, buf, sizeof buf)) > 0) {
            size_t take = (size_t)r < sizeof head - 1 - have ? (size_t)r : sizeof head - 1 - have;
            memcpy(head + have, buf, take);
            have += take;
        }
        /* "HTTP/1.1 200 OK": the status is the second word. */
        char status[8] = "?";
        sscanf(head, "%*s %7s", status);
        printf("%s %s %s\n", argv[i], status, SSL_get_version(ssl));
        fflush(stdout);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    return 0;
}
