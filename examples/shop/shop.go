package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/jobs"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

// maxImageBytes is the largest product image an admin may upload.
const maxImageBytes = 20 << 20

// config is the shop's own configuration (SHOP_*).
type config struct {
	SMTPAddr      string // host:port; "" logs mail instead of sending it
	MailFrom      string
	Seed          bool // seed the catalog on start when it is empty
	Dev           bool // session cookie over plain http
	AdminEmail    string
	AdminPassword string
	SSO           ssoConfig
}

// ssoConfig is the OpenID Connect login ("Sign in with hakit SSO"). It is
// enabled when all of its fields are set, and off when none is.
type ssoConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	BaseURL      string
}

// enabled reports whether SSO login is configured.
func (c ssoConfig) enabled() bool {
	return c.Issuer != "" && c.ClientID != "" && c.ClientSecret != "" && c.BaseURL != ""
}

// validate accepts all four fields set, or none.
func (c ssoConfig) validate() error {
	set := 0
	for _, v := range []string{c.Issuer, c.ClientID, c.ClientSecret, c.BaseURL} {
		if v != "" {
			set++
		}
	}
	if set != 0 && set != 4 {
		return errors.New("SHOP_SSO_ISSUER, SHOP_SSO_CLIENT_ID, SHOP_SSO_CLIENT_SECRET and SHOP_BASE_URL go together")
	}
	for _, u := range []string{c.Issuer, c.BaseURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return errors.New("SHOP_SSO_ISSUER and SHOP_BASE_URL must be http(s) URLs")
		}
	}
	return nil
}

// shop is the app: its handlers, its jobs, and what they share.
type shop struct {
	cfg      config
	db       *dbrouter.Router
	sessions *session.Manager
	outbox   *jobs.Outbox
	files    *uploads.Store // nil without S3 (HAKIT_S3_BUCKET)
	pages    *hakit.Templates
	log      *slog.Logger
	sso      *ssoClient // nil without SHOP_SSO_*

	// writeOrder runs the order's transaction: db.Write, and in tests a
	// Write whose COMMIT answer is lost (dbrouter.ErrCommitUnknown).
	writeOrder func(ctx context.Context, fn func(pgx.Tx) error) error
}

// routes mounts every page of the shop.
func (s *shop) routes(r chi.Router) {
	static, _ := fs.Sub(assets, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", staticHandler(static)))

	r.Get("/", s.home)
	r.Get("/c/{slug}", s.category)
	r.Get("/search", s.search)
	r.Get("/products/{id}", s.product)

	r.Get("/cart", s.cart)
	r.Post("/cart/add", s.cartAdd)
	r.Post("/cart/update", s.cartUpdate)

	r.Get("/checkout", s.checkout)
	r.Get("/checkout/address", s.addressForm)
	r.Post("/checkout/address", s.addressSave)
	r.Get("/checkout/payment", s.paymentForm)
	r.Post("/checkout/payment", s.paymentSave)
	r.Get("/checkout/review", s.review)
	r.Post("/checkout/place", s.place)

	r.Get("/orders", s.myOrders)
	r.Get("/orders/{id}", s.order)

	r.Get("/login", s.loginForm)
	r.Post("/login", s.login)
	r.Get("/register", s.registerForm)
	r.Post("/register", s.register)
	r.Post("/logout", s.logout)
	r.Get("/login/sso", s.ssoStart)
	r.Get("/login/sso/callback", s.ssoCallback)

	s.imageRoutes(r)
	s.adminRoutes(r)
}

// staticHandler serves the embedded stylesheet and icons, cacheable for a
// day (they change with a deploy).
func staticHandler(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		files.ServeHTTP(w, r)
	})
}

// parseTemplates parses the layout with its functions, then every page
// under templates/ (admin pages included).
func (s *shop) parseTemplates() (*hakit.Templates, error) {
	base, err := template.New("layout.html").Funcs(s.funcs()).ParseFS(assets, "templates/layout/*.html")
	if err != nil {
		return nil, err
	}
	return hakit.NewTemplates(base, assets, "templates/*.html")
}

// funcs are the template functions every page may use.
func (s *shop) funcs() template.FuncMap {
	return template.FuncMap{
		"money":    money,
		"imageURL": s.imageURL,
		"picture":  func(p product, size string) picture { return picture{Product: p, Size: size} },
		"tone":     func(id int64) int64 { return id % 6 },
		"initials": initials,
	}
}

// picture is the argument of the "pic" template: a product's image in a
// size.
type picture struct {
	Product product
	Size    string // "small" or "large"
}

// initials are the first letters of a name's first two words, for an
// image's placeholder: "Cast-Iron Skillet" → "CS".
func initials(name string) string {
	var out []rune
	for _, w := range strings.Fields(name) {
		for _, r := range w {
			if unicode.IsLetter(r) {
				out = append(out, unicode.ToUpper(r))
				break
			}
		}
		if len(out) == 2 {
			break
		}
	}
	return string(out)
}

// money formats minor units as dollars: 123456 → "$1,234.56".
func money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	whole := strconv.FormatInt(cents/100, 10)
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return fmt.Sprintf("%s$%s.%02d", sign, b.String(), cents%100)
}

// render renders a page with the layout's data added to data: Page (the
// body's data-page, the file name without .html unless data has one),
// User, CartCount, Flashes, SSO, the search query Q and form Errors.
func (s *shop) render(w http.ResponseWriter, r *http.Request, status int, page string, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	ctx := r.Context()
	if _, ok := data["Page"]; !ok {
		data["Page"] = strings.TrimSuffix(page, ".html")
	}
	data["User"] = s.currentUser(ctx)
	data["CartCount"] = s.cartCount(ctx)
	data["Flashes"] = s.sessions.Flashes(ctx)
	data["SSO"] = s.sso != nil
	for k, v := range map[string]any{"Q": "", "Errors": map[string]string{}} {
		if _, ok := data[k]; !ok {
			data[k] = v
		}
	}
	w.Header().Set("Cache-Control", "no-store") // pages show the cart and the user
	s.pages.Render(w, r, status, page, data)
}

// errorPage answers every error of the app: an HTML page for browsers,
// hakit's default (JSON or text) for the others.
func (s *shop) errorPage(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		hakit.DefaultErrorPage(w, r, e)
		return
	}
	s.render(w, r, e.Status, "error.html", map[string]any{
		"Status": e.Status, "Message": e.Message, "Title": http.StatusText(e.Status),
		"RequestID": hakit.RequestID(r.Context()),
	})
}

// fail answers with a status and a message through the error page.
func fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	hakit.Error(w, r, &hakit.HTTPError{Status: status, Message: msg})
}

// parseForm parses the request's form, answering the request when it
// cannot (413 over the body limit, 400 malformed).
func parseForm(w http.ResponseWriter, r *http.Request) error {
	err := hakit.ParseForm(w, r)
	if err != nil {
		hakit.Error(w, r, err)
	}
	return err
}

// start runs once the migrations ran: the admin account, then the seed.
func (s *shop) start(ctx context.Context) error {
	if err := s.ensureAdmin(ctx); err != nil {
		return fmt.Errorf("admin account: %w", err)
	}
	if s.cfg.Seed {
		if err := s.seed(ctx); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}
