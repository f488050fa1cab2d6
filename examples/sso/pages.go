package main

import "hakit.dev/hakit"

// parsePages parses the layout and every page, at start.
func parsePages() (*hakit.Templates, error) {
	return hakit.ParseTemplates(templatesFS, "templates/layout.html", "templates/pages/*.html")
}
