package main

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// seedLockKey is the advisory lock seeding takes, so that instances
// starting together seed once.
const seedLockKey int64 = 0x73686f705f736564

// seedProduct is a product of the seed catalog.
type seedProduct struct {
	name        string
	price       int64 // cents
	stock       int
	description string
}

// seedCategory is a category of the seed catalog with its products.
type seedCategory struct {
	name     string
	products []seedProduct
}

// seedCatalog is the demo catalog: six categories, thirty-six products.
func seedCatalog() []seedCategory {
	return []seedCategory{
		{"Coffee & Tea", []seedProduct{
			{"Stoneware Pour-Over Dripper", 3200, 40, "A hand-thrown ceramic dripper that keeps the bed hot for an even extraction. Fits standard #2 filters and most mugs."},
			{"Gooseneck Kettle, 1 Litre", 5900, 25, "Brushed steel kettle with a slim spout for slow, precise pouring. Works on gas, electric and induction hobs."},
			{"Single-Origin Beans, Huila", 1650, 60, "Washed Colombian beans from Huila, roasted medium-light. Notes of red apple, cane sugar and milk chocolate. 250 g."},
			{"Burr Grinder, Hand-Crank", 7400, 12, "Conical steel burrs and a stepped dial with 40 settings, from espresso to French press. Folds into its own travel sleeve."},
			{"Loose-Leaf Sencha Tin", 1400, 35, "Spring-harvest green tea from Shizuoka, steamed and rolled. Grassy, sweet and bright. 100 g tin."},
			{"Double-Wall Glass Mugs, Set of 2", 2800, 3, "Borosilicate glass that keeps tea hot and fingers cool. 300 ml each; dishwasher safe."},
		}},
		{"Kitchen", []seedProduct{
			{"Cast-Iron Skillet, 26 cm", 4500, 30, "Pre-seasoned cast iron that goes from stovetop to oven to table. Gets better with every fry-up."},
			{"Olive Wood Cutting Board", 3900, 18, "A single slab of olive wood with a juice groove on one side. Oil it now and then and it will last decades."},
			{"Chef's Knife, 20 cm", 8900, 15, "Full-tang stainless steel with a balanced walnut handle. Sharpened to 15 degrees per side at the factory."},
			{"Linen Tea Towels, Set of 3", 2400, 45, "Stonewashed European linen: absorbent, quick to dry and softer with every wash. In sage, oat and charcoal."},
			{"Enamel Dutch Oven, 4 L", 12900, 8, "Heavy enamelled cast iron for braises, stews and sourdough. Oven safe to 250 °C with its lid."},
			{"Bamboo Utensil Set", 1900, 0, "Spatula, spoon, slotted spoon and tongs from one piece of bamboo each. Gentle on non-stick pans."},
		}},
		{"Home Office", []seedProduct{
			{"Walnut Monitor Stand", 11900, 10, "Solid walnut riser that lifts a screen to eye level and keeps a keyboard underneath out of the way."},
			{"Felt Desk Mat, Large", 3400, 50, "Merino wool felt, 90 × 40 cm. Quiet under the mouse, warm under the wrists, and it does not slide."},
			{"Dot-Grid Notebook, A5", 1800, 80, "192 pages of 100 g paper that takes fountain-pen ink without bleeding. Lies flat; numbered pages."},
			{"Brass Desk Lamp", 9800, 7, "A weighted brass base and an adjustable arm with a warm 2700 K LED. Dims with a touch."},
			{"Cable Organiser Tray", 2600, 40, "Powder-coated steel tray that clamps under a desk and holds a power strip and the spaghetti around it."},
			{"Fountain Pen, Medium Nib", 4200, 22, "Steel medium nib, piston filler and a demonstrator barrel. Writes smooth from the first stroke."},
		}},
		{"Outdoors", []seedProduct{
			{"Insulated Water Bottle, 750 ml", 3200, 70, "Double-wall vacuum steel: cold for 24 hours, hot for 12. Leak-proof lid with a carry loop."},
			{"Merino Hiking Socks", 2200, 90, "Cushioned merino blend that stays warm when wet and does not smell after a week on the trail."},
			{"Packable Rain Jacket", 11900, 14, "Three-layer waterproof shell that packs into its own pocket. Pit zips and an adjustable hood."},
			{"Camp Enamel Mug", 1500, 55, "Steel mug with a speckled enamel coat and a rolled rim. Goes on the fire; 350 ml."},
			{"Trail Headlamp", 3900, 2, "350 lumens with a red night mode, rechargeable by USB-C. Weighs 68 g with its battery."},
			{"Wool Picnic Blanket", 7900, 11, "Recycled wool with a waterproof backing and a leather carry strap. 150 × 130 cm."},
		}},
		{"Bags & Travel", []seedProduct{
			{"Waxed Canvas Tote", 6800, 20, "Heavy waxed cotton canvas with leather handles and an inner zip pocket. Ages beautifully."},
			{"Roll-Top Backpack, 20 L", 13900, 9, "Weatherproof roll-top with a padded laptop sleeve and side bottle pockets. Fits under a plane seat."},
			{"Leather Card Wallet", 4500, 35, "Vegetable-tanned leather, hand-stitched, with four card slots and a centre pocket for notes."},
			{"Packing Cubes, Set of 4", 3600, 40, "Light ripstop cubes in four sizes with mesh tops, so you see what is inside before you unzip."},
			{"Travel Toiletry Bag", 2900, 28, "Hanging wash bag with a hook, a clear pouch for liquids and a water-resistant lining."},
			{"Passport Cover", 2400, 1, "Full-grain leather cover with a slot for the boarding pass. Softens and darkens with use."},
		}},
		{"Bath & Body", []seedProduct{
			{"Cedar & Sage Soap Bar", 900, 120, "Cold-process soap with cedarwood and sage oils, cured for six weeks. Gentle and long-lasting."},
			{"Waffle Cotton Bath Towel", 3800, 33, "Light waffle-weave cotton that dries fast and gets softer with every wash. 70 × 140 cm."},
			{"Bamboo Toothbrush, Set of 4", 1200, 75, "Biodegradable bamboo handles with soft nylon bristles. One for each member of the household."},
			{"Lavender Bath Salts", 1600, 40, "Dead Sea salt with dried lavender and essential oil, in a reusable glass jar. 400 g."},
			{"Ceramic Soap Dish", 1800, 24, "Slotted stoneware dish that lets a bar drain and dry between uses. Glazed in speckled white."},
			{"Linen Shower Curtain", 6400, 6, "Stonewashed linen that dries quickly and hangs in soft folds. 180 × 200 cm; machine washable."},
		}},
	}
}

// slugify makes a URL slug of a name: "Coffee & Tea" → "coffee-tea".
func slugify(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
		} else {
			dash = true
		}
	}
	return b.String()
}

// seed fills an empty catalog with seedCatalog, then has images made for
// its products. It is safe when instances start together (they take
// turns on an advisory lock, and the second finds the catalog filled) and
// does nothing to a catalog that has products.
func (s *shop) seed(ctx context.Context) error {
	seeded := false
	err := s.db.Write(ctx, func(tx pgx.Tx) error {
		seeded = false
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", seedLockKey); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM products").Scan(&n); err != nil || n > 0 {
			return err
		}
		for _, c := range seedCatalog() {
			var catID int64
			err := tx.QueryRow(ctx, `INSERT INTO categories (slug, name) VALUES ($1, $2)
				ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id`, slugify(c.name), c.name).Scan(&catID)
			if err != nil {
				return err
			}
			for _, p := range c.products {
				_, err := tx.Exec(ctx, `INSERT INTO products (category_id, slug, name, description, price_cents, stock)
					VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (slug) DO NOTHING`,
					catID, slugify(p.name), p.name, p.description, p.price, p.stock)
				if err != nil {
					return err
				}
			}
		}
		seeded = true
		return nil
	})
	if err != nil {
		return err
	}
	if seeded {
		s.log.Info("seeded the catalog")
	}
	return s.seedImages(ctx)
}
