package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// category is a shelf of the catalog.
type category struct {
	ID    int64
	Slug  string
	Name  string
	Count int // active products in it
}

// product is an article for sale. Prices are in cents.
type product struct {
	ID           int64
	Slug         string
	Name         string
	Description  string
	PriceCents   int64
	Stock        int
	ImageID      *int64
	CategorySlug string
	CategoryName string
}

// MaxQty is the most of one product a cart line may hold (the quantity
// picker's limit).
func (p product) MaxQty() int { return min(p.Stock, maxQty) }

// Low reports whether only a few are left.
func (p product) Low() bool { return p.Stock > 0 && p.Stock <= 5 }

// productColumns are what scanProducts reads, for a query on products p
// joined with categories c.
const productColumns = `p.id, p.slug, p.name, p.description, p.price_cents, p.stock, p.image_id, c.slug, c.name`

func scanProducts(rows pgx.Rows) ([]product, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (product, error) {
		var p product
		err := row.Scan(&p.ID, &p.Slug, &p.Name, &p.Description, &p.PriceCents, &p.Stock, &p.ImageID, &p.CategorySlug, &p.CategoryName)
		return p, err
	})
}

// queryProducts runs a query selecting productColumns.
func queryProducts(ctx context.Context, q dbrouter.Querier, sql string, args ...any) ([]product, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return scanProducts(rows)
}

// categories lists every category with its number of active products.
func categories(ctx context.Context, q dbrouter.Querier) ([]category, error) {
	rows, err := q.Query(ctx, `SELECT c.id, c.slug, c.name, count(p.id) FROM categories c
		LEFT JOIN products p ON p.category_id = c.id AND p.active GROUP BY c.id ORDER BY c.name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[category])
}

// home shows the categories and a few products in stock from each.
func (s *shop) home(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var cats []category
	var featured []product
	err := s.db.Read(ctx, func(q dbrouter.Querier) (err error) {
		if cats, err = categories(ctx, q); err != nil {
			return err
		}
		// The newest in stock of each category first, then the next ones.
		featured, err = queryProducts(ctx, q, `SELECT `+productColumns+` FROM (
				SELECT *, row_number() OVER (PARTITION BY category_id ORDER BY updated_at DESC, id DESC) AS rank
				FROM products WHERE active AND stock > 0) p
			JOIN categories c ON c.id = p.category_id ORDER BY p.rank, c.name LIMIT 8`)
		return err
	})
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "home.html", map[string]any{"Categories": cats, "Products": featured})
}

// category lists a category's products.
func (s *shop) category(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	slug := chi.URLParam(r, "slug")
	var cats []category
	var products []product
	err := s.db.Read(ctx, func(q dbrouter.Querier) (err error) {
		if cats, err = categories(ctx, q); err != nil {
			return err
		}
		products, err = queryProducts(ctx, q, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
			WHERE p.active AND c.slug = $1 ORDER BY p.name`, slug)
		return err
	})
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	var current *category
	for i := range cats {
		if cats[i].Slug == slug {
			current = &cats[i]
		}
	}
	if current == nil {
		fail(w, r, http.StatusNotFound, "There is no such category.")
		return
	}
	s.render(w, r, http.StatusOK, "category.html", map[string]any{"Categories": cats, "Category": current, "Products": products})
}

// maxQuery is the longest search query read; the rest is ignored.
const maxQuery = 100

// search finds active products by words (PostgreSQL full-text search, so
// "mugs" finds "Mug") or by part of their name.
func (s *shop) search(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > maxQuery {
		q = strings.ToValidUTF8(q[:maxQuery], "")
	}
	var products []product
	if q != "" {
		err := s.db.Read(ctx, func(db dbrouter.Querier) (err error) {
			products, err = queryProducts(ctx, db, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
				WHERE p.active AND (to_tsvector('english', p.name || ' ' || p.description) @@ websearch_to_tsquery('english', $1)
				                    OR p.name ILIKE $2)
				ORDER BY ts_rank(to_tsvector('english', p.name || ' ' || p.description), websearch_to_tsquery('english', $1)) DESC, p.name
				LIMIT 48`, q, "%"+escapeLike(q)+"%")
			return err
		})
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
	}
	s.render(w, r, http.StatusOK, "search.html", map[string]any{"Q": q, "Products": products})
}

// escapeLike escapes LIKE's wildcards in s.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// product shows one product with a form to add it to the cart.
func (s *shop) product(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, r, http.StatusNotFound, "There is no such product.")
		return
	}
	var p product
	var related []product
	err = s.db.Read(ctx, func(q dbrouter.Querier) error {
		ps, err := queryProducts(ctx, q, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
			WHERE p.active AND p.id = $1`, id)
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			return pgx.ErrNoRows
		}
		p = ps[0]
		related, err = queryProducts(ctx, q, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
			WHERE p.active AND c.slug = $1 AND p.id <> $2 ORDER BY (p.stock > 0) DESC, p.name LIMIT 4`, p.CategorySlug, p.ID)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		fail(w, r, http.StatusNotFound, "There is no such product, or it is no longer sold.")
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "product.html", map[string]any{"Product": p, "Related": related})
}
