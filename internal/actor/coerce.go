package actor

import "reflect"

// Coerce converts v to t where a Go programmer would expect it to work without a cast: between numeric kinds without
// loss (an int literal for a float64 or int64 parameter), element by element for slices and maps (a []any of ints for
// a []int parameter, which is what resolved futures and decoded values produce), and through interfaces. Methods'
// arguments and in-process results follow this one rule.
func Coerce(v reflect.Value, t reflect.Type) (reflect.Value, bool) {
	if !v.IsValid() {
		return reflect.Value{}, false
	}
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if v.Type().AssignableTo(t) {
		return v, true
	}
	switch {
	case isNumber(v.Kind()) && isNumber(t.Kind()):
		c := v.Convert(t)
		// Round trip to reject lossy conversions (300 into uint8, 1.5 into int).
		if back := c.Convert(v.Type()); back.Equal(v) {
			return c, true
		}
		return reflect.Value{}, false
	case v.Kind() == reflect.Slice && t.Kind() == reflect.Slice:
		out := reflect.MakeSlice(t, v.Len(), v.Len())
		for i := range v.Len() {
			e, ok := Coerce(v.Index(i), t.Elem())
			if !ok {
				return reflect.Value{}, false
			}
			out.Index(i).Set(e)
		}
		return out, true
	case v.Kind() == reflect.Map && t.Kind() == reflect.Map:
		out := reflect.MakeMapWithSize(t, v.Len())
		it := v.MapRange()
		for it.Next() {
			mk, ok := Coerce(it.Key(), t.Key())
			if !ok {
				return reflect.Value{}, false
			}
			mv, ok := Coerce(it.Value(), t.Elem())
			if !ok {
				return reflect.Value{}, false
			}
			out.SetMapIndex(mk, mv)
		}
		return out, true
	}
	return reflect.Value{}, false
}

func isNumber(k reflect.Kind) bool {
	return (k >= reflect.Int && k <= reflect.Uint64) || k == reflect.Float32 || k == reflect.Float64
}
