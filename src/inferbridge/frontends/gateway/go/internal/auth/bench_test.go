package auth

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkCheck is the cost of one decision for an infer request, by credential: what
// authentication adds to a request when it is on.
func BenchmarkCheck(b *testing.B) {
	f := newJWTFixture(b, Config{})
	keys, _, _, _ := newKeysAuthority(b, Config{})
	claims := f.claims(nil)
	cases := []struct {
		name string
		a    *Authority
		c    Credentials
	}{
		{"api-key", keys, Credentials{APIKey: adminKey}},
		{"jwt-hs256", f.a, Credentials{Authorization: "Bearer " + sign(b, jwt.SigningMethodHS256, "", claims, []byte(testSecret))}},
		{"jwt-es256", f.a, Credentials{Authorization: "Bearer " + sign(b, jwt.SigningMethodES256, "ec1", claims, f.ec)}},
		{"jwt-rs256", f.a, Credentials{Authorization: "Bearer " + sign(b, jwt.SigningMethodRS256, "rsa1", claims, f.rsa)}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if _, d := tc.a.Check(tc.c, infer("iris")); d != nil {
				b.Fatal(d.Message)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.a.Check(tc.c, infer("iris"))
			}
		})
	}
}
