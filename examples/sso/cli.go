package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// command runs `sso client …` and `sso keys …` against the database of
// HAKIT_DATABASE_URL_*, after bringing its schema up to date.
func command(ctx context.Context, hcfg hakit.Config, cfg config, args []string, out stdoutWriter) error {
	usage := errors.New("usage: sso client add|list|delete … | sso keys rotate")
	if len(args) < 2 {
		return usage
	}
	if len(hcfg.DatabaseURLs) == 0 {
		return errors.New("set HAKIT_DATABASE_URL_1 (and _2, … for the other nodes)")
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: hcfg.DatabaseURLs, Logger: lg})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := hakit.Migrate(ctx, db, migrations, lg); err != nil {
		return err
	}
	switch args[0] + " " + args[1] {
	case "client add":
		return clientAdd(ctx, db, cfg, args[2:], out)
	case "client list":
		cs, err := listClients(ctx, db)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tKIND\tSUBJECT\tSECTOR\tREDIRECT URIS")
		for _, c := range cs {
			kind := "confidential"
			if c.Public {
				kind = "public"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Name, kind, c.SubjectType, c.Sector, strings.Join(c.RedirectURIs, " "))
		}
		return tw.Flush()
	case "client delete":
		if len(args) != 3 {
			return errors.New("usage: sso client delete ID")
		}
		return deleteClient(ctx, db, args[2])
	case "keys rotate":
		kek := derive(cfg.secret, "sso signing keys")
		kr := newKeyring(db, kek[:], cfg.keys, lg)
		if _, err := kr.rotate(ctx, false); err != nil { // a first key, if none
			return err
		}
		id, err := kr.rotate(ctx, true)
		if err != nil {
			return err
		}
		if id == "" {
			fmt.Fprintln(out, "a next key is already published; it signs from its active_from")
			return nil
		}
		fmt.Fprintf(out, "published key %s; it signs in %s (SSO_KEY_LEAD)\n", id, cfg.keys.Lead)
		return nil
	}
	return usage
}

func clientAdd(ctx context.Context, db *dbrouter.Router, cfg config, args []string, out stdoutWriter) error {
	fl := flag.NewFlagSet("sso client add", flag.ContinueOnError)
	var cs clientSpec
	var redirects, logouts listFlag
	fl.StringVar(&cs.ID, "id", "", "client ID (default: a random one)")
	fl.StringVar(&cs.Name, "name", "", "name shown on the consent page (default: the ID)")
	fl.Var(&redirects, "redirect-uri", "a redirect URI, matched exactly (repeat for more)")
	fl.Var(&logouts, "post-logout-uri", "a post-logout redirect URI (repeat for more)")
	fl.BoolVar(&cs.Public, "public", false, "a public client (no secret; a native or browser app)")
	fl.StringVar(&cs.AppType, "type", "web", "web, native or user_agent")
	fl.StringVar(&cs.SubjectType, "subject", subjectPairwise, "pairwise or public")
	fl.StringVar(&cs.SectorIdentifierURI, "sector-uri", "", "sector_identifier_uri (needed for redirect URIs on several hosts)")
	fl.StringVar(&cs.Secret, "secret", "", "use this secret (32+ characters) instead of a random one")
	if err := fl.Parse(args); err != nil {
		return err
	}
	cs.RedirectURIs, cs.PostLogoutRedirectURIs = redirects, logouts
	sector, err := cs.validate(ctx, &http.Client{Timeout: 10 * time.Second}, cfg.checkSector)
	if err != nil {
		return err
	}
	secret, err := registerClient(ctx, db, cs, sector, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client_id=%s\n", cs.ID)
	if secret != "" {
		fmt.Fprintf(out, "client_secret=%s\n", secret)
	}
	fmt.Fprintf(out, "subject_type=%s sector=%s\n", cs.SubjectType, sector)
	return nil
}
