// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
  // Web Push (webpush.js, Settings › Notifications)
  "no answer from the browser's push service": "浏览器的推送服务没有响应",
  Notifications: "通知",
  "Notify me of new messages while yim is closed": "yim 关闭时也通知我新消息",
  "Checking whether this server sends push notifications…": "正在检查此服务器是否发送推送通知…",
  "Unavailable: this browser cannot receive push notifications.": "不可用：此浏览器无法接收推送通知。",
  "Unavailable: this server does not send push notifications.": "不可用：此服务器不发送推送通知。",
  "Blocked: notifications for this site are blocked in the browser's settings. Allow them there to turn this on.":
    "已屏蔽：浏览器设置中屏蔽了此网站的通知。请先在那里允许通知，再开启此项。",
  "Off. Turn it on, then allow notifications when the browser asks.": "已关闭。开启后，请在浏览器询问时允许通知。",
  "Off.": "已关闭。",
  "Turning on…": "正在开启…",
  "On: new messages show a notification on this device even while yim is closed.":
    "已开启：即使 yim 已关闭，新消息也会在此设备上显示通知。",
  "Unavailable: no push service reachable ({reason}). New messages notify only while yim is open in a tab.":
    "不可用：无法连接推送服务（{reason}）。只有在标签页中打开 yim 时才会通知新消息。",
  "Could not turn on push notifications: {reason}": "无法开启推送通知：{reason}",
};
