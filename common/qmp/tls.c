/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <gnutls/gnutls.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "tls.h"

static char *certs_dir;         /* qmp-tls-certificates= */
static char *psk_file;          /* qmp-tls-psk= */
static gnutls_certificate_credentials_t x509_creds;
static gnutls_psk_server_credentials_t psk_creds;

struct qmp_tls {
  gnutls_session_t session;
  bool send_again;              /* a send returned EAGAIN: repeat it */
};

int
qmp_tls_config (const char *key, const char *value)
{
  char **p;

  if (strcmp (key, "qmp-tls-certificates") == 0)
    p = &certs_dir;
  else if (strcmp (key, "qmp-tls-psk") == 0)
    p = &psk_file;
  else
    return 0;
  free (*p);
  *p = nbdkit_absolute_path (value);
  return *p ? 1 : -1;
}

bool
qmp_tls_configured (void)
{
  return certs_dir || psk_file;
}

/* DIR/NAME, which must be readable. */
static char *
cert_file (const char *name, bool required)
{
  char *f;

  if (asprintf (&f, "%s/%s", certs_dir, name) == -1) {
    nbdkit_error ("asprintf: %m");
    return NULL;
  }
  if (access (f, R_OK) == -1) {
    if (required)
      nbdkit_error ("qmp-tls-certificates: %s: %m", f);
    free (f);
    return NULL;
  }
  return f;
}

static int
load_x509 (void)
{
  CLEANUP_FREE char *ca = NULL, *cert = NULL, *key = NULL, *crl = NULL;
  int r;

  if ((ca = cert_file ("ca-cert.pem", true)) == NULL ||
      (cert = cert_file ("server-cert.pem", true)) == NULL ||
      (key = cert_file ("server-key.pem", true)) == NULL)
    return -1;
  crl = cert_file ("ca-crl.pem", false);
  r = gnutls_certificate_allocate_credentials (&x509_creds);
  if (r < 0)
    goto err;
  r = gnutls_certificate_set_x509_trust_file (x509_creds, ca,
                                              GNUTLS_X509_FMT_PEM);
  if (r == 0) {
    nbdkit_error ("qmp-tls-certificates: %s holds no certificate", ca);
    return -1;
  }
  if (r < 0)
    goto err;
  if (crl &&
      (r = gnutls_certificate_set_x509_crl_file (x509_creds, crl,
                                                 GNUTLS_X509_FMT_PEM)) < 0)
    goto err;
  r = gnutls_certificate_set_x509_key_file (x509_creds, cert, key,
                                            GNUTLS_X509_FMT_PEM);
  if (r < 0)
    goto err;
  nbdkit_debug ("qmp: TLS with the certificates in %s", certs_dir);
  return 0;

 err:
  nbdkit_error ("qmp-tls-certificates=%s: %s", certs_dir, gnutls_strerror (r));
  return -1;
}

static int
load_psk (void)
{
  FILE *fp = fopen (psk_file, "r");
  int r;

  /* gnutls reads the file at each handshake: check it now. */
  if (fp == NULL) {
    nbdkit_error ("qmp-tls-psk: %s: %m", psk_file);
    return -1;
  }
  fclose (fp);
  r = gnutls_psk_allocate_server_credentials (&psk_creds);
  if (r == 0)
    r = gnutls_psk_set_server_credentials_file (psk_creds, psk_file);
  if (r < 0) {
    nbdkit_error ("qmp-tls-psk=%s: %s", psk_file, gnutls_strerror (r));
    return -1;
  }
  nbdkit_debug ("qmp: TLS with the pre-shared keys in %s", psk_file);
  return 0;
}

int
qmp_tls_load (void)
{
  if (certs_dir && psk_file) {
    nbdkit_error ("qmp-tls-certificates and qmp-tls-psk: give only one");
    return -1;
  }
  return certs_dir ? load_x509 () : load_psk ();
}

void
qmp_tls_unload (void)
{
  if (x509_creds)
    gnutls_certificate_free_credentials (x509_creds);
  if (psk_creds)
    gnutls_psk_free_server_credentials (psk_creds);
  x509_creds = NULL;
  psk_creds = NULL;
  free (certs_dir);
  free (psk_file);
  certs_dir = psk_file = NULL;
}

struct qmp_tls *
qmp_tls_new (int fd)
{
  struct qmp_tls *t = calloc (1, sizeof *t);
  int r;

  if (t == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  r = gnutls_init (&t->session, GNUTLS_SERVER | GNUTLS_NONBLOCK);
  if (r < 0) {
    free (t);
    nbdkit_error ("qmp: gnutls_init: %s", gnutls_strerror (r));
    return NULL;
  }
  if (x509_creds) {
    r = gnutls_set_default_priority (t->session);
    if (r == 0)
      r = gnutls_credentials_set (t->session, GNUTLS_CRD_CERTIFICATE,
                                  x509_creds);
    /* A client must present a certificate that the CA signed. */
    if (r == 0) {
      gnutls_certificate_server_set_request (t->session, GNUTLS_CERT_REQUIRE);
      gnutls_session_set_verify_cert (t->session, NULL, 0);
    }
  }
  else {
    r = gnutls_priority_set_direct (t->session,
                                    "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL);
    if (r == 0)
      r = gnutls_credentials_set (t->session, GNUTLS_CRD_PSK, psk_creds);
  }
  if (r < 0) {
    nbdkit_error ("qmp: TLS session: %s", gnutls_strerror (r));
    qmp_tls_free (t);
    return NULL;
  }
  gnutls_transport_set_int (t->session, fd);
  return t;
}

void
qmp_tls_free (struct qmp_tls *t)
{
  if (t) {
    gnutls_deinit (t->session);
    free (t);
  }
}

int
qmp_tls_handshake (struct qmp_tls *t)
{
  int r = gnutls_handshake (t->session);

  if (r == 0) {
    if (psk_creds)
      nbdkit_debug ("qmp: TLS client with PSK identity %s",
                    gnutls_psk_server_get_username (t->session));
    return 1;
  }
  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
    return 0;
  /* A client that cannot authenticate: no concern of the server's log
   * beyond a debug line.
   */
  nbdkit_debug ("qmp: TLS handshake failed: %s", gnutls_strerror (r));
  return -1;
}

bool
qmp_tls_wants_write (struct qmp_tls *t)
{
  return gnutls_record_get_direction (t->session) == 1;
}

static ssize_t
result (ssize_t r)
{
  if (r >= 0)
    return r;
  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
    errno = EAGAIN;
  else {
    nbdkit_debug ("qmp: TLS: %s", gnutls_strerror (r));
    errno = ECONNRESET;
  }
  return -1;
}

ssize_t
qmp_tls_recv (struct qmp_tls *t, void *buf, size_t n)
{
  ssize_t r = gnutls_record_recv (t->session, buf, n);

  /* A client that closes without close_notify has still ended. */
  if (r == GNUTLS_E_PREMATURE_TERMINATION)
    return 0;
  return result (r);
}

ssize_t
qmp_tls_send (struct qmp_tls *t, const void *buf, size_t n)
{
  ssize_t r;

  /* gnutls wants an interrupted send repeated; our buffer may have
   * moved since, and NULL, 0 repeats it from gnutls's own copy.
   */
  if (t->send_again)
    r = gnutls_record_send (t->session, NULL, 0);
  else
    r = gnutls_record_send (t->session, buf, n);
  t->send_again = r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED;
  return result (r);
}

bool
qmp_tls_pending (struct qmp_tls *t)
{
  return gnutls_record_check_pending (t->session) > 0;
}

void
qmp_tls_bye (struct qmp_tls *t)
{
  gnutls_bye (t->session, GNUTLS_SHUT_WR);
}
