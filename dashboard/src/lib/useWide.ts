// Whether the screen is wide enough for the side navigation (Tailwind's md, 768 px).

import { useEffect, useState } from "react";

const QUERY = "(min-width: 768px)";

export function useWide(): boolean {
  const [wide, setWide] = useState(() => window.matchMedia(QUERY).matches);
  useEffect(() => {
    const media = window.matchMedia(QUERY);
    const update = () => setWide(media.matches);
    media.addEventListener("change", update);
    return () => media.removeEventListener("change", update);
  }, []);
  return wide;
}
