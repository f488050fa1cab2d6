package customer

import (
	"html"
	"regexp"
	"strconv"
	"strings"
)

// The hooks the shop's pages keep stable for scripted clients.
var (
	pageRe     = regexp.MustCompile(`<body[^>]*\sdata-page="([^"]*)"`)
	orderIDRe  = regexp.MustCompile(`data-order-id="(\d+)"`)
	categoryRe = regexp.MustCompile(`href="/c/([^"?#/]+)["?#]`)
	productRe  = regexp.MustCompile(`href="/products/(\d+)"`)
	formRe     = regexp.MustCompile(`(?is)<form\b([^>]*)>(.*?)</form>`)
	inputRe    = regexp.MustCompile(`(?is)<input\b([^>]*)>`)
	selectRe   = regexp.MustCompile(`(?is)<select\b([^>]*)>(.*?)</select>`)
	optionRe   = regexp.MustCompile(`(?is)<option\b([^>]*)>`)
	textareaRe = regexp.MustCompile(`(?is)<textarea\b([^>]*)>(.*?)</textarea>`)
	cartCntRe  = regexp.MustCompile(`data-cart-count="(\d+)"`)
	attrRe     = regexp.MustCompile(`(?is)([a-z_:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))`)
)

// pageName returns the body's data-page, "" when the page has none.
func pageName(body string) string {
	if m := pageRe.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// orderID returns the order page's data-order-id, 0 when there is none.
func orderID(body string) int64 {
	m := orderIDRe.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

// cartCount returns the layout's data-cart-count (units in the cart), -1
// when the page has none.
func cartCount(body string) int {
	m := cartCntRe.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// cartLines returns the cart page's lines as the shop holds them: the
// product_id and qty of each quantity form (POST /cart/update with a qty
// other than 0).
func cartLines(body string) map[int64]int {
	out := map[int64]int{}
	for _, m := range formRe.FindAllStringSubmatch(body, -1) {
		a := attrs(m[1])
		if !strings.EqualFold(a["method"], "post") || !strings.HasSuffix(a["action"], "/cart/update") {
			continue
		}
		f := parseFields(a["action"], m[2])
		id, err1 := strconv.ParseInt(f.Fields["product_id"], 10, 64)
		qty, err2 := strconv.Atoi(f.Fields["qty"])
		if err1 == nil && err2 == nil && qty > 0 {
			out[id] = qty
		}
	}
	return out
}

// categories returns the category slugs linked from a page, each once, in
// order.
func categories(body string) []string {
	return uniq(categoryRe.FindAllStringSubmatch(body, -1), func(s string) (string, bool) { return s, true })
}

// products returns the product ids linked from a page, each once, in order.
func products(body string) []int64 {
	return uniq(productRe.FindAllStringSubmatch(body, -1), func(s string) (int64, bool) {
		id, err := strconv.ParseInt(s, 10, 64)
		return id, err == nil && id > 0
	})
}

func uniq[T comparable](ms [][]string, conv func(string) (T, bool)) []T {
	var out []T
	seen := map[T]bool{}
	for _, m := range ms {
		v, ok := conv(m[1])
		if ok && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// attrs parses the attributes of a tag, names lower-cased, values
// unescaped.
func attrs(s string) map[string]string {
	a := map[string]string{}
	for _, m := range attrRe.FindAllStringSubmatch(s, -1) {
		v := m[2] + m[3] + m[4]
		a[strings.ToLower(m[1])] = html.UnescapeString(v)
	}
	return a
}

// form is the fields of an HTML form as a browser would submit them
// untouched: hidden and pre-filled inputs, checked boxes, the first or
// selected option of each select, textareas.
type form struct {
	Action string
	Fields map[string]string
	Order  []string // field names in document order
}

// findForm returns the first POST form of the page whose action is
// action, or whose action ends with it.
func findForm(body, action string) (form, bool) {
	for _, m := range formRe.FindAllStringSubmatch(body, -1) {
		a := attrs(m[1])
		if !strings.EqualFold(a["method"], "post") {
			continue
		}
		if a["action"] != action && !strings.HasSuffix(a["action"], action) {
			continue
		}
		return parseFields(a["action"], m[2]), true
	}
	return form{}, false
}

func parseFields(action, inner string) form {
	f := form{Action: action, Fields: map[string]string{}}
	set := func(name, value string) {
		if name == "" {
			return
		}
		if _, ok := f.Fields[name]; !ok {
			f.Order = append(f.Order, name)
		}
		f.Fields[name] = value
	}
	for _, m := range inputRe.FindAllStringSubmatch(inner, -1) {
		a := attrs(m[1])
		switch strings.ToLower(a["type"]) {
		case "submit", "button", "image", "reset", "file":
			continue
		case "checkbox", "radio":
			if _, checked := a["checked"]; !checked && !strings.Contains(strings.ToLower(m[1]), " checked") {
				continue
			}
			if a["value"] == "" {
				a["value"] = "on"
			}
		}
		set(a["name"], a["value"])
	}
	for _, m := range selectRe.FindAllStringSubmatch(inner, -1) {
		a := attrs(m[1])
		value := ""
		for i, o := range optionRe.FindAllStringSubmatch(m[2], -1) {
			oa := attrs(o[1])
			if i == 0 || strings.Contains(strings.ToLower(o[1]), "selected") {
				value = oa["value"]
			}
			if strings.Contains(strings.ToLower(o[1]), "selected") {
				break
			}
		}
		set(a["name"], value)
	}
	for _, m := range textareaRe.FindAllStringSubmatch(inner, -1) {
		set(attrs(m[1])["name"], html.UnescapeString(m[2]))
	}
	return f
}

// fill gives every empty field of f a value a shopper would type, from
// values by name, adds the values the form lacks (the contract's field
// names, should the page's markup hide one from the parser), and returns
// the fields to submit.
func (f form) fill(values map[string]string) map[string]string {
	out := make(map[string]string, len(f.Fields)+len(values))
	for name, v := range values {
		out[name] = v
	}
	for name, v := range f.Fields {
		if v == "" {
			v = values[name]
		}
		out[name] = v
	}
	return out
}
