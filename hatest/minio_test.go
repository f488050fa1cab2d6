package hatest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"hakit.dev/hatest"
)

func TestMinIORoundTripKillRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "media"})
	s3c := m.S3Client()

	body := make([]byte, 3<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	_, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String("a/b.bin"), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	get := func() ([]byte, error) {
		out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String("a/b.bin")})
		if err != nil {
			return nil, err
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
	if got, err := get(); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("round trip: %d bytes, %v; want the %d bytes put", len(got), err, len(body))
	}

	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := get(); err == nil {
		t.Fatal("GET on a killed server succeeded")
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := get(); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("after restart: %d bytes, %v; want the object kept", len(got), err)
	}
}
