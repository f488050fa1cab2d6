package main

import (
	"strings"
	"testing"
)

func TestPassMetrics(t *testing.T) {
	r := &report{}
	in := "step  took\nrolling-restart  20s\nMETRIC shop_orders_lost=0\nMETRIC shop_product_page_p99_ms=3.2\n"
	if err := passMetrics(strings.NewReader(in), r); err != nil {
		t.Fatal(err)
	}
	if len(r.metrics) != 2 || r.metrics[0] != "METRIC shop_orders_lost=0" || r.metrics[1] != "METRIC shop_product_page_p99_ms=3.2" {
		t.Errorf("metrics = %q", r.metrics)
	}
	if len(r.rows) != 2 {
		t.Errorf("rows = %q", r.rows)
	}
	for _, bad := range []string{"METRIC shop_orders_lost\n", "METRIC =1\n"} {
		if err := passMetrics(strings.NewReader(bad), &report{}); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("passMetrics(%q) = %v; want a malformed-line error", bad, err)
		}
	}
}
