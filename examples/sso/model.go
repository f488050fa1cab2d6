package main

import (
	"log/slog"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// client is a registered relying party (the clients table), as the
// provider sees it.
type client struct {
	id                     string
	name                   string
	secretHash             []byte // nil: a public client (PKCE, no secret)
	appType                string
	redirectURIs           []string
	postLogoutRedirectURIs []string
	subjectType            string
	sectorURI              string
	sector                 string
	idTokenLifetime        time.Duration
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.postLogoutRedirectURIs }

func (c *client) ApplicationType() op.ApplicationType {
	switch c.appType {
	case "native":
		return op.ApplicationTypeNative
	case "user_agent":
		return op.ApplicationTypeUserAgent
	}
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.secretHash == nil {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}

func (c *client) LoginURL(id string) string            { return "/login?authRequestID=" + id }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return c.idTokenLifetime }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// authRequest is one row of auth_requests: an /authorize call on its way
// through login and consent to a code.
type authRequest struct {
	id            string
	clientID      string
	redirectURI   string
	state         string
	nonce         string
	scopes        []string
	responseType  string
	responseMode  string
	prompt        []string
	maxAge        *int
	codeChallenge string
	codeMethod    string
	hintUserID    string
	userID        string
	subject       string // the sub this client knows the user by
	sid           string // the login session, as this client's sector sees it ("": none)
	authTime      time.Time
	done          bool
	codeUsed      bool
	createdAt     time.Time
}

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string          { return a.id }
func (a *authRequest) GetACR() string         { return "" }
func (a *authRequest) GetAudience() []string  { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time { return a.authTime }
func (a *authRequest) GetClientID() string    { return a.clientID }
func (a *authRequest) GetNonce() string       { return a.nonce }
func (a *authRequest) GetRedirectURI() string { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseType(a.responseType)
}
func (a *authRequest) GetResponseMode() oidc.ResponseMode {
	return oidc.ResponseMode(a.responseMode)
}
func (a *authRequest) GetScopes() []string   { return a.scopes }
func (a *authRequest) GetState() string      { return a.state }
func (a *authRequest) GetSubject() string    { return a.subject }
func (a *authRequest) Done() bool            { return a.done }
func (a *authRequest) localUserID() string   { return a.userID }
func (a *authRequest) tokenFamily() string   { return "" }
func (a *authRequest) authRequestID() string { return a.id }
func (a *authRequest) sessionID() string     { return a.sid }

func (a *authRequest) GetAMR() []string {
	if a.done {
		return []string{"pwd"}
	}
	return nil
}

func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	return &oidc.CodeChallenge{Challenge: a.codeChallenge, Method: oidc.CodeChallengeMethod(a.codeMethod)}
}

func (a *authRequest) hasPrompt(p string) bool { return slices.Contains(a.prompt, p) }

// LogValue keeps the request's secrets (state, nonce, challenge) out of logs.
func (a *authRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", a.id), slog.String("client_id", a.clientID))
}

// refreshRequest is a refresh token being redeemed (tokens row).
type refreshRequest struct {
	tokenID  string
	clientID string
	userID   string
	subject  string
	scopes   []string
	audience []string
	amr      []string
	authTime time.Time
	family   string
	sid      string
}

var _ op.RefreshTokenRequest = (*refreshRequest)(nil)

func (r *refreshRequest) GetAMR() []string            { return r.amr }
func (r *refreshRequest) GetAudience() []string       { return r.audience }
func (r *refreshRequest) GetAuthTime() time.Time      { return r.authTime }
func (r *refreshRequest) GetClientID() string         { return r.clientID }
func (r *refreshRequest) GetScopes() []string         { return r.scopes }
func (r *refreshRequest) GetSubject() string          { return r.subject }
func (r *refreshRequest) SetCurrentScopes(s []string) { r.scopes = s }
func (r *refreshRequest) localUserID() string         { return r.userID }
func (r *refreshRequest) tokenFamily() string         { return r.family }
func (r *refreshRequest) authRequestID() string       { return "" }
func (r *refreshRequest) sessionID() string           { return r.sid }

// grant is what both kinds of token request tell the storage about the
// user behind them.
type grant interface {
	op.TokenRequest
	GetClientID() string
	GetAMR() []string
	GetAuthTime() time.Time
	localUserID() string
	tokenFamily() string
	authRequestID() string
	// sessionID is the sid of the ID tokens: the login session the grant
	// was made in, as the client's sector sees it; "" for grants made
	// before ID tokens carried one.
	sessionID() string
}
