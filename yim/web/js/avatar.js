// User avatars (docs/protocol.md §10, §19.4): every User carries `avatar`, the media id of an
// image whose thumbnail lists show; "" shows the initials (format.js `avatar`, which calls
// withPhoto here, so every place a user appears gets the picture). Thumbnails need the bearer
// token, so they come through Media's blob: URL cache.
//
// A `profile` notice (§9.5) carries a user's new User: it replaces every copy this page
// holds (the store's users and conversation peers, my own profile, the friend and block
// lists), then the views re-render. Users the server did not tell (members of big groups)
// are refreshed by the next lookup.

let media = null;

// The Media of the signed-in page (null after sign-out: initials only).
export function setAvatarMedia(m) {
  media = m;
}

// Fill an initials avatar element with the user's picture once its thumbnail is here; the
// initials stay if there is none or it cannot be fetched.
export function withPhoto(el, user) {
  const id = user?.avatar;
  if (!id || !media) return el;
  el.dataset.avatar = id;
  media
    .thumbnail(id)
    .then((url) => {
      if (el.dataset.avatar !== id) return;
      const img = document.createElement("img");
      img.alt = "";
      img.src = url;
      img.className = "avatar-photo";
      el.replaceChildren(img);
    })
    .catch(() => {});
  return el;
}

// Apply `profile` notices to every copy of the user; `onChange(user)` re-renders the views.
export function watchProfiles({ socket, store, relations }, onChange) {
  socket.addEventListener("notice", (e) => {
    const frame = e.detail;
    if (frame.type !== "profile" || !frame.data?.user_id) return;
    const user = frame.data;
    const id = user.user_id;
    if (id === store.me.user_id) Object.assign(store.me, user);
    if (store.users.has(id) || id === store.me.user_id) store.rememberUser({ ...store.users.get(id), ...user });
    for (const conv of store.convs.values()) {
      if (conv.peer?.user_id === id) conv.peer = { ...conv.peer, ...user };
      store.changed("conv", conv.conv_id); // group authors and member names too
    }
    const friend = relations.friends.get(id);
    if (friend) friend.user = { ...friend.user, ...user };
    if (relations.blocked.has(id)) relations.blocked.set(id, { ...relations.blocked.get(id), ...user });
    relations.dispatchEvent(new Event("change"));
    onChange(user);
  });
}
