package codec_test

import (
	"reflect"
	"testing"
)

// A small call: what a pool sends for client.Call(pool, "Process", 42, "short").
var (
	benchArgs  = []any{42, "short"}
	benchTypes = []reflect.Type{reflect.TypeFor[int](), reflect.TypeFor[string]()}
)

func BenchmarkEncodeCall(b *testing.B) {
	for _, cc := range codecs {
		b.Run(cc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 64)
			for b.Loop() {
				var err error
				if buf, err = cc.c.AppendArgs(buf[:0], benchArgs); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkDecodeCall(b *testing.B) {
	for _, cc := range codecs {
		b.Run(cc.name, func(b *testing.B) {
			b.ReportAllocs()
			body, err := cc.c.AppendArgs(nil, benchArgs)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := cc.c.DecodeArgs(body, benchTypes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeCallParallel(b *testing.B) {
	for _, cc := range codecs {
		b.Run(cc.name, func(b *testing.B) {
			b.ReportAllocs()
			body, err := cc.c.AppendArgs(nil, benchArgs)
			if err != nil {
				b.Fatal(err)
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cc.c.DecodeArgs(body, benchTypes); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
