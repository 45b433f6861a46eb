// Command oidc is a tiny OIDC issuer used as a test fixture by gocacher's
// integration tests. It lets a real gocached (run with --jwt-issuer) validate
// JWTs that the tests mint on demand.
//
// Usage:
//
//	oidc -listen 127.0.0.1:0 -url-file PATH
//
// Once listening, the base URL (http://127.0.0.1:PORT, no trailing newline)
// is written atomically to PATH (temp file + rename). That URL is also the
// issuer ("iss") of every token. Endpoints:
//
//	GET /.well-known/openid-configuration  {"issuer": base, "jwks_uri": base+"/jwks"}
//	GET /jwks                              JWKS with the ES256 public key (use=sig, kid
//	                                       test-key-1) and an RSA one (alg RS256, kid
//	                                       test-rsa-1)
//	GET /mint?aud=A&exp=SECS&sub=S&k=v...  a signed JWT as text/plain
//	GET /mint?alg=ALG&...                  the same signed with the RSA key under
//	                                       ALG (RS256, RS384, RS512, PS256, PS384,
//	                                       PS512), whatever its JWK says
//	GET /actions-token?audience=A[&exp=SECS]
//	    imitates GitHub Actions' ACTIONS_ID_TOKEN_REQUEST_URL endpoint;
//	    requires "Authorization: Bearer actions-request-token", answers
//	    {"value": "<jwt>"}.
//
// For /mint, aud defaults to "gocached", sub to
// "repo:test/repo:ref:refs/heads/main" and exp to 600 (seconds from now). A
// negative exp yields a well-formed but expired token whose iat and nbf are an
// hour before its exp. Any other query parameter becomes a string claim
// (e.g. repository, ref); these are applied last, so e.g. iss=X overrides the
// issuer.
//
// The program logs to stderr only on errors and runs until killed.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	keyID              = "test-key-1"
	rsaKeyID           = "test-rsa-1"
	defaultAudience    = "gocached"
	defaultSubject     = "repo:test/repo:ref:refs/heads/main"
	defaultExpSeconds  = 600
	actionsRequestAuth = "Bearer actions-request-token"
)

type issuer struct {
	base   string
	jwks   jose.JSONWebKeySet
	signer jose.Signer
	rsa    *rsa.PrivateKey
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("oidc: ")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	urlFile := flag.String("url-file", "", "file to write the base URL to once listening (stdout if empty)")
	flag.Parse()

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatalf("generating key: %v", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: keyID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		log.Fatalf("creating signer: %v", err)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatalf("generating RSA key: %v", err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	base := "http://" + ln.Addr().String()

	iss := &issuer{
		base:   base,
		signer: signer,
		rsa:    rsaKey,
		jwks: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
			Key:       &priv.PublicKey,
			KeyID:     keyID,
			Algorithm: string(jose.ES256),
			Use:       "sig",
		}, {
			Key:       &rsaKey.PublicKey,
			KeyID:     rsaKeyID,
			Algorithm: string(jose.RS256),
			Use:       "sig",
		}}},
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", iss.serveConfig)
	mux.HandleFunc("GET /jwks", iss.serveJWKS)
	mux.HandleFunc("GET /mint", iss.serveMint)
	mux.HandleFunc("GET /actions-token", iss.serveActionsToken)

	if *urlFile != "" {
		if err := writeFileAtomic(*urlFile, []byte(base)); err != nil {
			log.Fatalf("writing url file: %v", err)
		}
	} else {
		fmt.Println(base)
	}

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}

// writeFileAtomic writes data to a temp file next to path and renames it into
// place, so readers never observe a partial file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("writing response: %v", err)
	}
}

func (s *issuer) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]string{
		"issuer":   s.base,
		"jwks_uri": s.base + "/jwks",
	})
}

func (s *issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.jwks)
}

// parseExp returns the "exp" query parameter in seconds, or the default.
func parseExp(q url.Values) (int64, error) {
	v := q.Get("exp")
	if v == "" {
		return defaultExpSeconds, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad exp %q: %v", v, err)
	}
	return n, nil
}

// mint signs a token for aud/sub expiring expSecs from now, with extra string
// claims merged last: with the ES256 key if alg is empty, else with the RSA
// key under alg.
func (s *issuer) mint(alg, aud, sub string, expSecs int64, extra map[string]any) (string, error) {
	signer := s.signer
	if alg != "" {
		var err error
		signer, err = jose.NewSigner(
			jose.SigningKey{
				Algorithm: jose.SignatureAlgorithm(alg),
				Key:       jose.JSONWebKey{Key: s.rsa, KeyID: rsaKeyID},
			},
			(&jose.SignerOptions{}).WithType("JWT"),
		)
		if err != nil {
			return "", fmt.Errorf("signer for %s: %v", alg, err)
		}
	}
	now := time.Now()
	exp := now.Add(time.Duration(expSecs) * time.Second)
	issued := now
	if expSecs < 0 {
		issued = exp.Add(-time.Hour)
	}
	claims := jwt.Claims{
		Issuer:    s.base,
		Subject:   sub,
		Audience:  jwt.Audience{aud},
		IssuedAt:  jwt.NewNumericDate(issued),
		NotBefore: jwt.NewNumericDate(issued),
		Expiry:    jwt.NewNumericDate(exp),
	}
	b := jwt.Signed(signer).Claims(claims)
	if len(extra) > 0 {
		b = b.Claims(extra)
	}
	return b.Serialize()
}

func (s *issuer) serveMint(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	expSecs, err := parseExp(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	aud, sub := defaultAudience, defaultSubject
	if q.Has("aud") {
		aud = q.Get("aud")
	}
	if q.Has("sub") {
		sub = q.Get("sub")
	}
	extra := map[string]any{}
	for k, vs := range q {
		switch k {
		case "aud", "sub", "exp", "alg":
			continue
		}
		extra[k] = vs[len(vs)-1]
	}
	tok, err := s.mint(q.Get("alg"), aud, sub, expSecs, extra)
	if err != nil {
		log.Printf("mint: %v", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(tok))
}

func (s *issuer) serveActionsToken(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != actionsRequestAuth {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	expSecs, err := parseExp(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	aud := defaultAudience
	if q.Has("audience") {
		aud = q.Get("audience")
	}
	tok, err := s.mint("", aud, defaultSubject, expSecs, nil)
	if err != nil {
		log.Printf("actions-token: %v", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]string{"value": tok})
}
